"""The head rig: a mesh object built from a morphable model, driven by native Blender controls.

    expressions   shape keys named as in the model (ARKit names for ICT-FaceKit), relative to a muted "Neutral"
                  key holding the model's mean shape, so each key adds exactly the model's blendshape B_exp[j]
    identity      ``object.joker_rig.identity`` weights α; they and the gaze rewrite the Basis key only:
                  Basis = S̄ + B_id α with the eyeballs turned by the gaze (ICT's blendshapes never move the
                  eyeballs, so this equals MorphableModel.evaluate exactly)
    head pose     the object's rotation (rotation mode XZY: X = pitch, Z = yaw, Y = -roll), read back from the
                  world matrix, so parenting and any rotation mode work too
Mesh coordinates are ``head_to_blender`` of the head frame: the object origin is the head-frame origin.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import bpy
import numpy as np

from .shared.conventions import (BLENDER_TO_HEAD, HEAD_TO_BLENDER, blender_to_head, euler_to_matrix,
                                  head_to_blender)
from .shared.jobs import RigState
from .shared.morphable import MorphableModel, find_default_rig

NEUTRAL_KEY = "Neutral"
BUNDLED_RIG = Path(__file__).resolve().parent / "data" / "ict.npz"

_models: dict[tuple[str, float], MorphableModel] = {}


# --- the model ----------------------------------------------------------------------------------------------------
def default_model_path(rig_file: str = "") -> Path:
    """The rig file to build from: the preference, the bundled ICT rig, then the project's default search."""
    if rig_file:
        return Path(bpy.path.abspath(rig_file))
    if BUNDLED_RIG.is_file():
        return BUNDLED_RIG
    return find_default_rig("ict")


def load_model(path: os.PathLike) -> MorphableModel:
    """The model at ``path``, loaded once per session (reloaded when the file changes)."""
    path = Path(path)
    key = (str(path), path.stat().st_mtime if path.exists() else 0.0)
    if key not in _models:
        _models[key] = MorphableModel.load(path)
    return _models[key]


def model_for(obj: bpy.types.Object) -> MorphableModel:
    return load_model(obj.joker_rig.model_path)


def rig_name(model: MorphableModel) -> str:
    """The RigState.model name for a model: ict, bfm or its sanitised name."""
    name = model.name.lower()
    for short in ("ict", "bfm"):
        if short in name:
            return short
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64] or "rig"


# --- building -----------------------------------------------------------------------------------------------------
def _mesh_from_model(model: MorphableModel, name: str) -> bpy.types.Mesh:
    verts = head_to_blender(model.neutral).astype(np.float32)  # [V, 3] Blender object space
    faces = model.faces  # [F, 3]
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(faces.size)
    mesh.loops.foreach_set("vertex_index", faces.ravel())
    mesh.polygons.add(len(faces))
    mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    uv, face_uv = model.arrays.get("uv"), model.arrays.get("face_uv")
    if uv is not None and face_uv is not None and len(face_uv) == len(faces):
        layer = mesh.uv_layers.new(name="UVMap")
        layer.data.foreach_set("uv", np.asarray(uv, np.float32)[face_uv].ravel())
    mesh.update(calc_edges=True)
    mesh.validate(clean_customdata=False)
    mesh.shade_smooth()
    return mesh


def _add_shape_keys(obj: bpy.types.Object, model: MorphableModel) -> None:
    basis = obj.shape_key_add(name="Basis", from_mix=False)
    neutral = obj.shape_key_add(name=NEUTRAL_KEY, from_mix=False)
    neutral.mute = True  # the reference of every expression key, never a control itself
    S0 = model.neutral  # [V, 3] head frame
    for j, name in enumerate(model.expression_names):
        kb = obj.shape_key_add(name=name, from_mix=False)
        kb.data.foreach_set("co", head_to_blender(S0 + model.expression_basis[j]).astype(np.float32).ravel())
        kb.relative_key = neutral
        kb.slider_min, kb.slider_max = -1.0, 1.5
        kb.value = 0.0  # Blender 5 gives a new key the value 1.0; the rig starts neutral
    obj.data.shape_keys.use_relative = True
    obj.active_shape_key_index = 2 if len(model.expression_names) else 0
    del basis


def _skin_material() -> bpy.types.Material:
    mat = bpy.data.materials.get("Joker Rig Skin") or bpy.data.materials.new("Joker Rig Skin")
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (0.62, 0.5, 0.45, 1.0)
        bsdf.inputs["Roughness"].default_value = 0.55
    return mat


def build_rig(context: bpy.types.Context, path: os.PathLike, name: str = "Head Rig") -> bpy.types.Object:
    """Create the rig object at the 3D cursor, linked to the active collection, and make it active."""
    model = load_model(path)
    obj = bpy.data.objects.new(name, _mesh_from_model(model, name))
    obj.data.materials.append(_skin_material())
    context.collection.objects.link(obj)
    obj.location = context.scene.cursor.location
    obj.rotation_mode = "XZY"  # X = pitch, Z = yaw, Y = -roll (see module docstring)
    settings = obj.joker_rig
    settings.is_rig, settings.model, settings.model_path = True, rig_name(model), str(path)
    for _ in range(model.n_identity):
        settings.identity.add()
    _add_shape_keys(obj, model)
    update_basis(obj)
    for other in context.view_layer.objects:
        other.select_set(False)
    obj.select_set(True)
    context.view_layer.objects.active = obj
    return obj


# --- controls -----------------------------------------------------------------------------------------------------
def identity_weights(obj: bpy.types.Object) -> np.ndarray:
    """float32 [I] identity weights α."""
    items = obj.joker_rig.identity
    alpha = np.zeros(len(items), dtype=np.float32)
    items.foreach_get("value", alpha)
    return alpha


def gaze(obj: bpy.types.Object) -> tuple[float, float]:
    return (float(obj.joker_rig.gaze_yaw), float(obj.joker_rig.gaze_pitch))


def update_basis(obj: bpy.types.Object) -> None:
    """Rewrite the Basis key (and the mesh) from identity and gaze; expression keys keep their deltas."""
    key = obj.data.shape_keys
    if key is None or not obj.joker_rig.is_rig:
        return
    S = model_for(obj).evaluate(identity_weights(obj), None, (0.0, 0.0, 0.0), gaze(obj))  # [V, 3] head frame
    co = head_to_blender(S).astype(np.float32).ravel()
    key.key_blocks[0].data.foreach_set("co", co)
    obj.data.vertices.foreach_set("co", co)
    obj.data.update()


def expression_weights(obj: bpy.types.Object) -> dict[str, float]:
    """Non-zero expression shape-key values by name (muted keys count as 0)."""
    names = set(model_for(obj).expression_names)
    return {kb.name: float(kb.value) for kb in obj.data.shape_keys.key_blocks
            if kb.name in names and kb.value != 0.0 and not kb.mute}


def set_expressions(obj: bpy.types.Object, weights: dict[str, float], reset: bool = True) -> None:
    names = set(model_for(obj).expression_names)
    for kb in obj.data.shape_keys.key_blocks:
        if kb.name in weights:
            kb.value = float(weights[kb.name])
        elif reset and kb.name in names:
            kb.value = 0.0


def pose_from_rotation(R: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) radians with ``euler_to_matrix(pitch, yaw, roll) == R`` (R float [3, 3], head frame)."""
    yaw = float(np.arcsin(np.clip(-R[2, 0], -1.0, 1.0)))
    if abs(R[2, 0]) < 1.0 - 1e-9:
        pitch = float(np.arctan2(R[2, 1], R[2, 2]))
        roll = float(np.arctan2(R[1, 0], R[0, 0]))
    else:  # gimbal lock: put everything into pitch
        pitch, roll = float(np.arctan2(-R[1, 2], R[1, 1])), 0.0
    return pitch, yaw, roll


def world_rotation(obj: bpy.types.Object, depsgraph: Optional[bpy.types.Depsgraph] = None) -> np.ndarray:
    """float64 [3, 3] the object's evaluated world rotation in Blender axes (scale removed)."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()  # brings matrix_world up to date
    return np.array(obj.evaluated_get(depsgraph).matrix_world.to_3x3().normalized(), dtype=np.float64)


def head_pose(obj: bpy.types.Object, depsgraph: Optional[bpy.types.Depsgraph] = None) -> tuple[float, float, float]:
    """The rig's head pose (pitch, yaw, roll) in the head frame: R_head = M⁻¹ R_blender M, M = head -> Blender."""
    R_head = BLENDER_TO_HEAD[:3, :3] @ world_rotation(obj, depsgraph) @ HEAD_TO_BLENDER[:3, :3]
    return pose_from_rotation(R_head)


def rig_state(obj: bpy.types.Object, depsgraph: Optional[bpy.types.Depsgraph] = None) -> RigState:
    alpha = identity_weights(obj)
    nz = np.flatnonzero(alpha)
    ident = tuple(float(a) for a in alpha[: nz[-1] + 1]) if len(nz) else ()
    return RigState(model=obj.joker_rig.model, identity=ident, expressions=expression_weights(obj),
                    pose=head_pose(obj, depsgraph), gaze=gaze(obj))


def posed_vertices(obj: bpy.types.Object, depsgraph: Optional[bpy.types.Depsgraph] = None) -> np.ndarray:
    """float32 [V, 3] the evaluated rig (shape keys, modifiers) rotated by its world rotation, in the head frame
    (metres; the object's location and scale are where the result lands, not part of the request)."""
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        co = np.empty(len(mesh.vertices) * 3, dtype=np.float32)
        mesh.vertices.foreach_get("co", co)
    finally:
        evaluated.to_mesh_clear()
    model = model_for(obj)
    if len(co) != model.n_vertices * 3:
        raise ValueError(f"rig '{obj.name}': expected {model.n_vertices} vertices, the evaluated mesh has "
                         f"{len(co) // 3} — disable modifiers that change the topology (e.g. Subdivision)")
    R = world_rotation(obj, depsgraph)
    return blender_to_head(co.reshape(-1, 3).astype(np.float64) @ R.T).astype(np.float32)


def expected_vertices(obj: bpy.types.Object) -> np.ndarray:
    """float32 [V, 3] what MorphableModel.evaluate gives for the rig's state (for checks and tests)."""
    s = rig_state(obj)
    return model_for(obj).evaluate(identity_weights(obj), s.expressions, s.pose, s.gaze)


def random_identity(obj: bpy.types.Object, seed: int, scale: float = 1.0, modes: int = 20) -> None:
    """Draw the first ``modes`` identity weights from N(0, scale²); the rest are set to 0."""
    rng = np.random.default_rng(seed)
    alpha = np.zeros(len(obj.joker_rig.identity), dtype=np.float32)
    alpha[:modes] = rng.normal(0.0, scale, min(modes, len(alpha)))
    obj.joker_rig.identity.foreach_set("value", alpha)
    update_basis(obj)



def set_head_pose(obj: bpy.types.Object, pose: tuple[float, float, float]) -> None:
    """Rotate the rig so that :func:`head_pose` reads ``pose`` (pitch, yaw, roll radians, head frame):
    R_blender = M R_head Mᵀ, written into the object's own rotation in its rotation mode (a parent's rotation is
    taken out)."""
    from mathutils import Matrix

    R = Matrix((HEAD_TO_BLENDER[:3, :3] @ euler_to_matrix(*pose) @ BLENDER_TO_HEAD[:3, :3]).tolist())
    if obj.parent is not None:  # world = parent @ parent_inverse @ local
        R = (obj.parent.matrix_world @ obj.matrix_parent_inverse).to_3x3().normalized().inverted() @ R
    if obj.rotation_mode == "QUATERNION":
        obj.rotation_quaternion = R.to_quaternion()
    elif obj.rotation_mode == "AXIS_ANGLE":
        axis, angle = R.to_quaternion().to_axis_angle()
        obj.rotation_axis_angle = (angle, *axis)
    else:
        obj.rotation_euler = R.to_euler(obj.rotation_mode)


def apply_state(obj: bpy.types.Object, state: RigState, identity: bool, expression: bool, pose: bool) -> None:
    """Set the chosen parts of a fitted ``RigState`` on the rig: identity weights (the rest 0), expression weights
    (the rest 0), head rotation. Gaze and the object's location and scale are left as they are."""
    if identity:
        alpha = np.zeros(len(obj.joker_rig.identity), dtype=np.float32)
        n = min(len(alpha), len(state.identity))
        alpha[:n] = np.asarray(state.identity[:n], dtype=np.float32)
        obj.joker_rig.identity.foreach_set("value", alpha)
        update_basis(obj)
    if expression:
        names = set(model_for(obj).expression_names)
        set_expressions(obj, {k: v for k, v in state.expressions.items() if k in names})
    if pose:
        set_head_pose(obj, tuple(state.pose))

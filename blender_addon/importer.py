"""Import a result GLB and land it on its rig. Imports only bpy and mathutils so that demo_scene.py can reuse it
outside the extension.

The GLB is in the head frame (metres, +Y up, front +Z); Blender's glTF importer converts it to Blender's axes
exactly as ``shared.conventions.head_to_blender`` does, so the imported mesh already sits on an unrotated rig at
the origin. The result is posed (the rig's rotation is in the geometry), so it takes the rig's location and scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import bpy
from mathutils import Matrix


def import_glb(path: Path, name: str = "Joker Head") -> bpy.types.Object:
    """Import ``path`` (GLB) into the active collection; returns its mesh object (UVs, image-textured material)."""
    before = set(bpy.data.objects)
    result = bpy.ops.import_scene.gltf(filepath=str(path), merge_vertices=True)
    if "FINISHED" not in result:
        raise RuntimeError(f"Blender's glTF importer could not read {path}")
    new = [o for o in bpy.data.objects if o not in before]
    meshes = [o for o in new if o.type == "MESH"]
    if not meshes:
        raise RuntimeError(f"{path} holds no mesh")
    obj = max(meshes, key=lambda o: len(o.data.polygons))
    world = obj.matrix_world.copy()
    obj.parent = None  # drop importer-made empties, keeping the placement
    obj.matrix_world = world
    for other in new:
        if other is not obj and other.type == "EMPTY" and not other.children:
            bpy.data.objects.remove(other)
    obj.name = name
    return obj


def place_on(obj: bpy.types.Object, rig: Optional[bpy.types.Object]) -> None:
    """Give ``obj`` the rig's location and scale (its rotation is already in the geometry); hide the rig."""
    if rig is None:
        return
    loc, _rot, scale = rig.matrix_world.decompose()
    obj.matrix_world = Matrix.Translation(loc) @ Matrix.Diagonal(scale).to_4x4() @ obj.matrix_world
    for coll in rig.users_collection:  # same collection as the rig
        if obj.name not in coll.objects:
            coll.objects.link(obj)
    for coll in list(obj.users_collection):
        if coll not in rig.users_collection:
            coll.objects.unlink(obj)
    rig.hide_set(True)
    rig.hide_render = True


def _upstream_image(node: bpy.types.Node, depth: int = 6) -> Optional[bpy.types.Image]:
    """The first Image Texture with pixels feeding ``node`` (through mix or colour nodes), else None."""
    if node.type == "TEX_IMAGE" and node.image is not None and node.image.size[0] > 0:
        return node.image
    if depth == 0:
        return None
    for socket in node.inputs:
        for link in socket.links:
            image = _upstream_image(link.from_node, depth - 1)
            if image is not None:
                return image
    return None


def textured_material(obj: bpy.types.Object) -> Optional[bpy.types.Material]:
    """The first material whose Principled BSDF Base Color comes from an Image Texture with pixels, else None."""
    for slot in obj.material_slots:
        mat = slot.material
        if mat is None or not mat.use_nodes:
            continue
        for node in mat.node_tree.nodes:
            if node.type == "BSDF_PRINCIPLED" and any(
                    _upstream_image(link.from_node) is not None for link in node.inputs["Base Color"].links):
                return mat
    return None

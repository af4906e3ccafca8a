"""The add-on's state: one PropertyGroup on the scene (``scene.joker_head``) and one on rig objects
(``object.joker_rig``). Everything here is saved in the .blend, job ids included, so reopening a file reattaches to
its jobs (see net.reattach).

A property that sets a request field is built from that field's spec (``specprops``: bounds, choices, text limit,
default and tooltip), so ``shared`` declares each limit once; only what the add-on means differently is written here.
"""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from . import quality, specprops
from .shared.config import DistillConfig, ExportConfig, PriorConfig
from .shared.jobs import GenerateParams, PreviewParams, RigState, TextParams

_float, _int, _enum, _str = (specprops.float_property, specprops.int_property, specprops.enum_property,
                             specprops.string_property)


def _rig_update(attr: str):
    def update(self, context: bpy.types.Context) -> None:
        from . import rig

        getattr(rig, attr)(self.id_data)
    return update


def _is_rig(self, obj: bpy.types.Object) -> bool:
    return obj.type == "MESH" and obj.joker_rig.is_rig


class JokerIdentityWeight(bpy.types.PropertyGroup):
    value: _float("JokerIdentityWeight", "value", RigState, "identity", "Weight", soft_min=-3.0, soft_max=3.0,
                  update=_rig_update("update_basis"))


class JokerRigSettings(bpy.types.PropertyGroup):
    """Rig controls that are not native Blender data (expressions are shape keys, head pose is the rotation)."""

    is_rig: BoolProperty(default=False, options={"HIDDEN"})
    model: _str("JokerRigSettings", "model", RigState, "model", "Model")
    model_path: StringProperty(name="Model File", subtype="FILE_PATH", default="",
                               description="the morphable model this rig was built from")
    identity: CollectionProperty(type=JokerIdentityWeight)
    gaze_yaw: _float("JokerRigSettings", "gaze_yaw", RigState, "gaze", "Gaze Yaw", subtype="ANGLE",
                     description="eyeball rotation; positive looks toward the subject's left",
                     update=_rig_update("update_basis"))
    gaze_pitch: _float("JokerRigSettings", "gaze_pitch", RigState, "gaze", "Gaze Pitch", subtype="ANGLE",
                       description="eyeball rotation; positive looks down", update=_rig_update("update_basis"))
    preset_strength: FloatProperty(name="Strength", default=1.0, min=0.0, max=1.5,
                                   description="scale of the preset's expression weights")


class JokerJob(bpy.types.PropertyGroup):
    """One submitted job as the scene remembers it (saved in the .blend)."""

    job_id: StringProperty(name="Job")
    kind: StringProperty(name="Kind")
    state: StringProperty(name="State", default="submitted")
    stage: StringProperty(name="Stage")
    step: IntProperty(min=0)
    total: IntProperty(min=0)
    overall: FloatProperty(min=0.0, max=1.0, description="fraction of the whole job done")
    eta_s: FloatProperty(default=-1.0, description="estimated seconds left (-1: unknown)")
    message: StringProperty()
    last_seq: IntProperty(min=0, description="last progress seen, for reattaching")
    error: StringProperty()
    hint: StringProperty()
    result_path: StringProperty(subtype="FILE_PATH")
    imported: BoolProperty(default=False)
    rig_name: StringProperty(description="the rig the job was made from (the result lands on it)")
    purpose: StringProperty(description="fit jobs: portrait (Match Portrait) or expression (Match Expression)")
    warnings: StringProperty(description="warnings the backend reported, one per line")


class JokerState(bpy.types.PropertyGroup):
    rig: PointerProperty(type=bpy.types.Object, name="Rig", poll=_is_rig, description="the head rig to generate from")
    reference: PointerProperty(type=bpy.types.Image, name="Reference",
                               description="portrait of the identity (optional); sent as a PNG")
    reference_framing: _enum("JokerState", "reference_framing", GenerateParams, "reference_framing", "Framing", {
        "aligned": ("Aligned on the face", "the backend frames the reference on its 5 facial landmarks, exactly as "
                                           "the prior was trained"),
        "centre": ("Centre crop", "the centre square of the image, for references without a detectable face")})
    driving: PointerProperty(type=bpy.types.Image, name="Driving",
                             description="a second photo: Match Expression takes its expression and head pose")
    match_expression: BoolProperty(name="Expression", default=False,
                                   description="Match Portrait also sets the expression from the reference")
    match_pose: BoolProperty(name="Pose", default=False,
                             description="Match Portrait also sets the head rotation from the reference")
    fit_job: StringProperty(description="id of the latest fit job (Match Portrait / Match Expression)")
    fit_summary: StringProperty(description="the latest fit's verdict and landmark error")
    prompt: _str("JokerState", "prompt", TextParams, "prompt", "Prompt")
    negative_prompt: _str("JokerState", "negative_prompt", TextParams, "negative_prompt", "Negative")
    cfg: _float("JokerState", "cfg", GenerateParams, "cfg", "Guidance 3D")
    preview_cfg: _float("JokerState", "preview_cfg", PreviewParams, "cfg", "Guidance 2D")
    preview_steps: _int("JokerState", "preview_steps", PreviewParams, "steps", "Preview Steps", default=25)
    seed: _int("JokerState", "seed", TextParams, "seed", "Seed")
    # items from DistillConfig.preset's choices (quality.preset_names), labelled with their time estimates
    quality: EnumProperty(name="Quality", items=quality.enum_items(), default=quality.default_preset(),
                          description="distillation preset; the estimate is for one H100-class GPU")
    # the add-on's 0 means "the preset's own count"; the upper bound is DistillConfig.steps'
    max_steps: _int("JokerState", "max_steps", DistillConfig, "steps", "Step Cap", default=0, min=0,
                    description="cap the distillation's optimisation steps to bound the time (0: the preset's own "
                                "count)")
    mesh_resolution: _enum("JokerState", "mesh_resolution", ExportConfig, "resolution", "Mesh Grid",
                           values=(64, 128, 192, 256, 384, 512), fmt="{}\u00b3")
    faces: _int("JokerState", "faces", ExportConfig, "faces", "Faces")
    texture: _enum("JokerState", "texture", ExportConfig, "texture", "Texture", fmt="{} px")
    prior_mode: _enum("JokerState", "prior_mode", PriorConfig, "mode", "Prior", {
        "joker": ("Joker", "the authors' checkpoint"),
        "free": ("Training-free", "any SD1.5 with a normal ControlNet"),
        "oracle": ("Oracle (test)", "a test prior that needs no weights: checks the whole path quickly")})
    # empty sends no base_model (the backend's stock SD1.5), so the default is the add-on's own
    base_model: _str("JokerState", "base_model", PriorConfig, "base_model", "Base Model", default="",
                     description="training-free prior only: an SD1.5 diffusers folder or single-file fine-tune "
                                 "(.safetensors, .ckpt) on the backend machine, by name under its models folder or "
                                 "absolute path; empty: stock SD1.5")
    view_az: _float("JokerState", "view_az", PreviewParams, "az_deg", "Azimuth")
    view_el: _float("JokerState", "view_el", PreviewParams, "el_deg", "Elevation")
    normal_map_res: IntProperty(name="Normal Map Size", default=512, min=64, max=1024,
                                description="live normal-map preview size (the prior sees 512)")
    auto_normal_map: BoolProperty(name="Live", default=True,
                                  description="re-render the normal-map preview when the rig changes")
    jobs: CollectionProperty(type=JokerJob)
    generate_job: StringProperty(description="id of the latest 3D job")
    preview_job: StringProperty(description="id of the latest 2D job")
    status: StringProperty(default="not connected", description="backend status line")
    connected: BoolProperty(default=False)
    error: StringProperty(description="latest error not tied to a job")
    hint: StringProperty()


specprops.mirror("JokerState", "quality", DistillConfig, "preset")  # built in quality.py from the same choices

CLASSES = (JokerIdentityWeight, JokerRigSettings, JokerJob, JokerState)


def find_job(scene: bpy.types.Scene, job_id: str) -> JokerJob | None:
    for job in scene.joker_head.jobs:
        if job.job_id == job_id:
            return job
    return None


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.joker_head = PointerProperty(type=JokerState)
    bpy.types.Object.joker_rig = PointerProperty(type=JokerRigSettings)


def unregister() -> None:
    del bpy.types.Object.joker_rig
    del bpy.types.Scene.joker_head
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

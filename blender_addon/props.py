"""The add-on's state: one PropertyGroup on the scene (``scene.joker_head``) and one on rig objects
(``object.joker_rig``). Everything here is saved in the .blend, job ids included, so reopening a file reattaches to
its jobs (see net.reattach)."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from . import quality


def _rig_update(attr: str):
    def update(self, context: bpy.types.Context) -> None:
        from . import rig

        getattr(rig, attr)(self.id_data)
    return update


def _is_rig(self, obj: bpy.types.Object) -> bool:
    return obj.type == "MESH" and obj.joker_rig.is_rig


class JokerIdentityWeight(bpy.types.PropertyGroup):
    value: FloatProperty(name="Weight", default=0.0, soft_min=-3.0, soft_max=3.0, min=-10.0, max=10.0,
                         description="identity mode weight in standard deviations", update=_rig_update("update_basis"))


class JokerRigSettings(bpy.types.PropertyGroup):
    """Rig controls that are not native Blender data (expressions are shape keys, head pose is the rotation)."""

    is_rig: BoolProperty(default=False, options={"HIDDEN"})
    model: StringProperty(name="Model", default="ict", description="rig name sent to the backend (ict, bfm, ...)")
    model_path: StringProperty(name="Model File", subtype="FILE_PATH", default="",
                               description="the morphable model this rig was built from")
    identity: CollectionProperty(type=JokerIdentityWeight)
    gaze_yaw: FloatProperty(name="Gaze Yaw", default=0.0, min=-1.0, max=1.0, subtype="ANGLE",
                            description="eyeball rotation; positive looks toward the subject's left",
                            update=_rig_update("update_basis"))
    gaze_pitch: FloatProperty(name="Gaze Pitch", default=0.0, min=-1.0, max=1.0, subtype="ANGLE",
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
    reference_framing: EnumProperty(name="Framing", default="aligned", items=[
        ("aligned", "Aligned on the face", "the backend frames the reference on its 5 facial landmarks, exactly as "
                                           "the prior was trained"),
        ("centre", "Centre crop", "the centre square of the image, for references without a detectable face")])
    driving: PointerProperty(type=bpy.types.Image, name="Driving",
                             description="a second photo: Match Expression takes its expression and head pose")
    match_expression: BoolProperty(name="Expression", default=False,
                                   description="Match Portrait also sets the expression from the reference")
    match_pose: BoolProperty(name="Pose", default=False,
                             description="Match Portrait also sets the head rotation from the reference")
    fit_job: StringProperty(description="id of the latest fit job (Match Portrait / Match Expression)")
    fit_summary: StringProperty(description="the latest fit's verdict and landmark error")
    prompt: StringProperty(name="Prompt", default="", maxlen=1000,
                           description="what the rig cannot show: emotion, tongue, hair, skin, ...")
    negative_prompt: StringProperty(name="Negative", default="", maxlen=1000,
                                    description="what to steer away from")
    cfg: FloatProperty(name="Guidance 3D", default=19.0, min=0.0, max=50.0,
                       description="classifier-free guidance in distillation (19 in the paper)")
    preview_cfg: FloatProperty(name="Guidance 2D", default=3.0, min=0.0, max=50.0,
                               description="classifier-free guidance of 2D previews (3 in the paper)")
    preview_steps: IntProperty(name="Preview Steps", default=25, min=1, max=1000,
                               description="denoising steps of a 2D preview")
    seed: IntProperty(name="Seed", default=0, min=0, description="the same seed reproduces the result")
    quality: EnumProperty(name="Quality", items=quality.enum_items(), default=quality.default_preset(),
                          description="distillation preset; the estimate is for one H100-class GPU")
    max_steps: IntProperty(name="Step Cap", default=0, min=0, max=1_000_000,
                           description="cap the distillation's optimisation steps to bound the time (0: the "
                                       "preset's own count)")
    mesh_resolution: EnumProperty(name="Mesh Grid", default="256", description="density grid the mesh is cut "
                                  "from: finer keeps more detail and takes longer",
                                  items=[(str(n), f"{n}\u00b3", "") for n in (64, 128, 192, 256, 384, 512)])
    faces: IntProperty(name="Faces", default=50_000, min=500, max=1_000_000,
                       description="triangle count of the exported head")
    texture: EnumProperty(name="Texture", default="1024", description="texture width and height in pixels",
                          items=[(str(n), f"{n} px", "") for n in (256, 512, 1024, 2048, 4096)])
    prior_mode: EnumProperty(name="Prior", default="joker", items=[
        ("joker", "Joker", "the authors' checkpoint"),
        ("free", "Training-free", "any SD1.5 with a normal ControlNet"),
        ("oracle", "Oracle (test)", "a test prior that needs no weights: checks the whole path quickly")])
    base_model: StringProperty(
        name="Base Model", default="",
        description="training-free prior only: an SD1.5 diffusers folder or single-file fine-tune (.safetensors, "
                    ".ckpt) on the backend machine, by name under its models folder or absolute path; empty: stock "
                    "SD1.5")
    view_az: FloatProperty(name="Azimuth", default=0.0, min=-90.0, max=90.0,
                           description="view of the 2D preview and the normal map, degrees")
    view_el: FloatProperty(name="Elevation", default=0.0, min=-60.0, max=60.0,
                           description="view of the 2D preview and the normal map, degrees")
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

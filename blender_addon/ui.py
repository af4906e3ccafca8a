"""The sidebar panels (3D viewport > N > Joker): backend, rig, normal map, generate."""

from __future__ import annotations

import bpy

from . import images, net, prefs, quality
from .props import find_job


def _eta(seconds: float) -> str:
    if seconds < 0:
        return "ETA unknown"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"ETA {h} h {m:02d} min" if h else (f"ETA {m} min {s:02d} s" if m else f"ETA {s} s")


def _image_preview(layout: bpy.types.UILayout, name: str, scale: float = 8.0) -> None:
    image = bpy.data.images.get(name)
    if image is None:
        return
    image.preview_ensure()
    layout.template_icon(icon_value=image.preview.icon_id, scale=scale)


class _Panel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Joker"


class _RigPanel(_Panel):
    """A sub-panel shown once the scene has a rig."""

    bl_parent_id = "JOKER_PT_main"

    @classmethod
    def poll(cls, context):
        return context.scene.joker_head.rig is not None


class JOKER_PT_main(_Panel, bpy.types.Panel):
    bl_label = "Joker Head"

    def draw(self, context):
        layout, state = self.layout, context.scene.joker_head
        box = layout.box()
        row = box.row()
        row.label(text=state.status, icon="LINKED" if state.connected else "UNLINKED")
        row.operator("joker_head.test_connection", text="", icon="FILE_REFRESH")
        endpoint = prefs.get(context).backend_address
        where = "this machine" if net.is_local(endpoint) else "a remote machine"
        box.label(text=f"Contacts {endpoint} ({where})", icon="URL")
        reason = net.blocked_reason(context)
        if reason:
            box.label(text=reason, icon="ERROR")
        if state.error:
            err = layout.box()
            err.alert = True
            err.label(text=state.error, icon="ERROR")
            if state.hint:
                err.label(text=state.hint, icon="INFO")
        layout.prop(state, "rig")
        layout.operator("joker_head.add_rig", icon="MONKEY")


class JOKER_PT_rig(_RigPanel, bpy.types.Panel):
    bl_label = "Rig"

    def draw(self, context):
        layout = self.layout
        obj = context.scene.joker_head.rig
        settings = obj.joker_rig
        row = layout.row(align=True)
        row.operator_menu_enum("joker_head.apply_preset", "preset", text="Preset", icon="PRESET")
        row.prop(settings, "preset_strength", text="")
        row.operator("joker_head.reset_expression", text="", icon="LOOP_BACK")
        key = obj.data.shape_keys
        if key is not None:
            layout.template_list("MESH_UL_shape_keys", "", key, "key_blocks", obj, "active_shape_key_index", rows=4)
            active = obj.active_shape_key
            if active is not None and obj.active_shape_key_index > 1:
                layout.prop(active, "value", text=active.name)
        col = layout.column(align=True)
        col.label(text="Head pose (object rotation)")
        col.prop(obj, "rotation_euler", index=0, text="Pitch (X)")
        col.prop(obj, "rotation_euler", index=2, text="Yaw (Z)")
        col.prop(obj, "rotation_euler", index=1, text="Roll (-Y)")
        col = layout.column(align=True)
        col.prop(settings, "gaze_yaw")
        col.prop(settings, "gaze_pitch")
        col = layout.column(align=True)
        row = col.row(align=True)
        row.label(text="Identity")
        row.operator("joker_head.random_identity", text="", icon="RNDCURVE")
        row.operator("joker_head.reset_identity", text="", icon="LOOP_BACK")
        for i, item in enumerate(settings.identity[:6]):
            col.prop(item, "value", text=f"Mode {i + 1}", slider=True)


class JOKER_PT_portrait(_RigPanel, bpy.types.Panel):
    bl_label = "Portrait (fit the rig to a photo)"

    def draw(self, context):
        layout, state = self.layout, context.scene.joker_head
        layout.template_ID(state, "reference", open="image.open")
        row = layout.row(align=True)
        row.scale_y = 1.3
        row.operator("joker_head.match_portrait", icon="USER")
        row.prop(state, "match_expression", toggle=True)
        row.prop(state, "match_pose", toggle=True)
        layout.template_ID(state, "driving", open="image.open")
        layout.operator("joker_head.match_expression", icon="SHAPEKEY_DATA")
        job = find_job(context.scene, state.fit_job)
        JOKER_PT_generate.draw_job(layout, job, "Fit")
        if state.fit_summary:
            row = layout.row()
            row.label(text=state.fit_summary, icon="CHECKMARK")
            row.operator("joker_head.apply_fit", text="", icon="FILE_REFRESH")
        layout.label(text="What the prior sees (aligned crop, landmarks):")
        _image_preview(layout, images.ALIGNED_IMAGE)


class JOKER_PT_normal_map(_RigPanel, bpy.types.Panel):
    bl_label = "Normal Map (what the prior sees)"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout, state = self.layout, context.scene.joker_head
        row = layout.row(align=True)
        row.prop(state, "view_az")
        row.prop(state, "view_el")
        row = layout.row(align=True)
        row.prop(state, "normal_map_res")
        row.prop(state, "auto_normal_map", toggle=True)
        row.operator("joker_head.refresh_normal_map", text="", icon="FILE_REFRESH")
        _image_preview(layout, images.NORMAL_MAP_IMAGE)


class JOKER_PT_generate(_Panel, bpy.types.Panel):
    bl_label = "Generate"
    bl_parent_id = "JOKER_PT_main"

    def draw(self, context):
        layout, state = self.layout, context.scene.joker_head
        layout.template_ID(state, "reference", open="image.open")
        if state.reference is not None:
            state.reference.preview_ensure()
            layout.template_icon(icon_value=state.reference.preview.icon_id, scale=6.0)
        layout.prop(state, "reference_framing")
        layout.prop(state, "prompt")
        layout.prop(state, "negative_prompt")
        row = layout.row(align=True)
        row.prop(state, "cfg")
        row.prop(state, "preview_cfg")
        row = layout.row(align=True)
        row.prop(state, "seed")
        row.prop(state, "preview_steps")
        layout.prop(state, "quality")
        layout.label(text=f"Estimated: {quality.estimate(state.quality, state.max_steps)} on one data-centre GPU",
                     icon="TIME")
        row = layout.row(align=True)
        row.prop(state, "max_steps")
        row.prop(state, "mesh_resolution", text="")
        row = layout.row(align=True)
        row.prop(state, "faces")
        row.prop(state, "texture", text="")
        layout.prop(state, "prior_mode")
        if state.prior_mode == "free":
            layout.prop(state, "base_model")
        row = layout.row(align=True)
        row.scale_y = 1.4
        row.operator("joker_head.preview", icon="IMAGE_DATA")
        row.operator("joker_head.generate", icon="MESH_MONKEY")
        row.operator("joker_head.cancel", text="", icon="CANCEL")
        for job_id, title in ((state.generate_job, "3D"), (state.preview_job, "2D")):
            self.draw_job(layout, find_job(context.scene, job_id), title)
        _image_preview(layout, images.PROGRESS_IMAGE)
        _image_preview(layout, images.PREVIEW_IMAGE)

    @staticmethod
    def draw_job(layout: bpy.types.UILayout, job, title: str) -> None:
        if job is None:
            return
        box = layout.box()
        box.label(text=f"{title} job {job.job_id[:8]}: {job.state}")
        if job.state in ("submitted", "queued", "running"):
            stage = job.step / job.total if job.total else 0.0
            box.progress(factor=stage, type="BAR", text=f"{job.stage or 'waiting'} {job.step}/{job.total}")
            box.progress(factor=job.overall, type="BAR", text=f"overall {100 * job.overall:.0f} %  {_eta(job.eta_s)}")
            if job.message:
                box.label(text=job.message)
        for line in job.warnings.split("\n") if job.warnings else ():  # e.g. several faces in the reference
            box.label(text=line, icon="ERROR")
        if job.error:
            box.alert = True
            box.label(text=job.error, icon="ERROR")
            if job.hint:
                box.label(text=job.hint, icon="INFO")
        if job.state == "done" and job.kind == "generate":
            row = box.row()
            row.label(text="imported" if job.imported else "ready", icon="CHECKMARK")
            row.operator("joker_head.import_result", text="Import Again" if job.imported else "Import")


CLASSES = (JOKER_PT_main, JOKER_PT_rig, JOKER_PT_portrait, JOKER_PT_normal_map, JOKER_PT_generate)


register, unregister = bpy.utils.register_classes_factory(CLASSES)

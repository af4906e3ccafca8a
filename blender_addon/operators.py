"""Operators: rig building and posing, the normal-map preview, backend requests and the result import.

Every button that can be disabled says why through ``poll_message_set``.
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import EnumProperty, StringProperty

from . import importer, live, net, prefs, request, rig
from .props import find_job
from .shared.presets import EXPRESSION_PRESETS, get_preset, preset_weights
from .shared.spec import SpecError

ACTIVE = ("submitted", "queued", "running")


def _rig(context: bpy.types.Context) -> bpy.types.Object | None:
    obj = context.scene.joker_head.rig
    if obj is not None and obj.name in context.scene.objects and obj.joker_rig.is_rig:
        return obj
    return None


def _running(context: bpy.types.Context, job_id: str):
    job = find_job(context.scene, job_id) if job_id else None
    return job if job is not None and job.state in ACTIVE else None


def _preset_items(self, context):
    return [(p.name, p.name.replace("_", " ").title(), p.prompt_hint) for p in EXPRESSION_PRESETS.values()]


class JOKER_OT_add_rig(bpy.types.Operator):
    """Add a morphable head rig (ICT-FaceKit by default) at the 3D cursor"""

    bl_idname = "joker_head.add_rig"
    bl_label = "Add Head Rig"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if context.mode != "OBJECT":
            cls.poll_message_set("Switch to Object Mode to add a rig")
            return False
        return True

    def execute(self, context):
        try:
            path = rig.default_model_path(prefs.get(context).rig_file)
            obj = rig.build_rig(context, path)
        except (OSError, ValueError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        state = context.scene.joker_head
        if not state.jobs:  # a fresh scene takes the preferred quality
            state.quality = prefs.get(context).default_quality
        state.rig = obj
        self.report({"INFO"}, f"Added {obj.name}: {len(obj.data.vertices)} vertices, "
                              f"{len(obj.data.shape_keys.key_blocks) - 2} expressions")
        return {"FINISHED"}


class _RigOperator(bpy.types.Operator):
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        if _rig(context) is None:
            cls.poll_message_set("Add a head rig first (Add Head Rig)")
            return False
        return True


class JOKER_OT_apply_preset(_RigOperator):
    """Set the rig's expression from a preset (and suggest its prompt when the prompt is empty)"""

    bl_idname = "joker_head.apply_preset"
    bl_label = "Apply Expression Preset"
    preset: EnumProperty(name="Preset", items=_preset_items)

    def execute(self, context):
        obj = _rig(context)
        try:
            weights = preset_weights(self.preset, rig.model_for(obj).expression_names,
                                     obj.joker_rig.preset_strength)
        except SpecError as e:
            self.report({"ERROR"}, f"{e.expected} needed: {e.hint}")
            return {"CANCELLED"}
        preset = get_preset(self.preset)
        rig.set_expressions(obj, weights)
        obj.joker_rig.gaze_yaw, obj.joker_rig.gaze_pitch = preset.gaze  # updates the Basis
        state = context.scene.joker_head
        if not state.prompt.strip():
            state.prompt = f"a photo of a person {preset.prompt_hint}"
        return {"FINISHED"}


class JOKER_OT_reset_expression(_RigOperator):
    """Set every expression to 0 and the gaze to straight ahead"""

    bl_idname = "joker_head.reset_expression"
    bl_label = "Reset Expression"

    def execute(self, context):
        obj = _rig(context)
        rig.set_expressions(obj, {})
        obj.joker_rig.gaze_yaw = obj.joker_rig.gaze_pitch = 0.0
        return {"FINISHED"}


class JOKER_OT_random_identity(_RigOperator):
    """Draw a random identity (the first 20 modes from a normal distribution; the seed is the scene's seed)"""

    bl_idname = "joker_head.random_identity"
    bl_label = "Random Identity"

    def execute(self, context):
        rig.random_identity(_rig(context), context.scene.joker_head.seed)
        return {"FINISHED"}


class JOKER_OT_reset_identity(_RigOperator):
    """Set every identity weight to 0 (the model's mean face)"""

    bl_idname = "joker_head.reset_identity"
    bl_label = "Mean Identity"

    def execute(self, context):
        obj = _rig(context)
        obj.joker_rig.identity.foreach_set("value", [0.0] * len(obj.joker_rig.identity))
        rig.update_basis(obj)
        return {"FINISHED"}


class JOKER_OT_refresh_normal_map(_RigOperator):
    """Render the normal map the prior will see (shared renderer, the panel's view) into an Image, in the
    background"""

    bl_idname = "joker_head.refresh_normal_map"
    bl_label = "Refresh Normal Map"
    bl_options = {"REGISTER"}

    def execute(self, context):
        if not live.start_render(context.scene):
            self.report({"INFO"}, "A normal-map render is already running")
        return {"FINISHED"}


class _BackendOperator(bpy.types.Operator):
    kind = ""

    @classmethod
    def poll(cls, context):
        reason = net.blocked_reason(context)
        if reason is None and _rig(context) is None:
            reason = "Add a head rig first (Add Head Rig)"
        if reason is None and cls.kind:
            state = context.scene.joker_head
            if _running(context, state.generate_job if cls.kind == "generate" else state.preview_job):
                reason = f"A {cls.kind} job is running: wait for it or cancel it"
            elif cls.kind == "preview" and state.prior_mode == "oracle":
                reason = "The oracle prior has no 2D preview: choose the Joker or Training-free prior"
        if reason:
            cls.poll_message_set(reason)
            return False
        return True

    def submit(self, context) -> set:
        try:
            req = request.build(context.scene, self.kind, context.evaluated_depsgraph_get())
            job_id = net.submit(context.scene, req.kind, req.params, req.inputs, _rig(context).name)
        except SpecError as e:
            self.report({"ERROR"}, f"{e.field}: expected {e.expected}, got {e.received}. {e.hint}")
            return {"CANCELLED"}
        except (RuntimeError, ValueError, OSError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Sent {self.kind} job {job_id[:8]} to {net.session().config[0]}")
        return {"FINISHED"}


class JOKER_OT_preview(_BackendOperator):
    """Generate one 2D image of the posed rig with the prompt and reference (a quick check before 3D)"""

    bl_idname = "joker_head.preview"
    bl_label = "Preview 2D"
    kind = "preview"

    def execute(self, context):
        return self.submit(context)


class JOKER_OT_generate(_BackendOperator):
    """Generate the textured 3D head; it is imported onto the rig when done"""

    bl_idname = "joker_head.generate"
    bl_label = "Generate 3D"
    kind = "generate"

    def execute(self, context):
        return self.submit(context)


class _MatchOperator(bpy.types.Operator):
    """Send a fit job for a photo; its result sets the rig in one undo step when it arrives (net.apply_fit)."""

    purpose = ""
    image_attr = ""

    @classmethod
    def poll(cls, context):
        reason = net.blocked_reason(context)
        state = context.scene.joker_head
        if reason is None and _rig(context) is None:
            reason = "Add a head rig first (Add Head Rig)"
        if reason is None and getattr(state, cls.image_attr) is None:
            reason = f"Pick a {cls.image_attr} photo first"
        if reason is None and _running(context, state.fit_job):
            reason = "A fit is running: wait for it"
        if reason:
            cls.poll_message_set(reason)
            return False
        return True

    def execute(self, context):
        from . import request
        from .shared.spec import SpecError

        try:
            req = request.fit_request(context.scene, self.purpose)
            job_id = net.submit(context.scene, req.kind, req.params, req.inputs, _rig(context).name, self.purpose)
        except SpecError as e:
            self.report({"ERROR"}, f"{e.field}: expected {e.expected}, got {e.received}. {e.hint}")
            return {"CANCELLED"}
        except (RuntimeError, ValueError, OSError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Fitting the {self.image_attr} photo (job {job_id[:8]})")
        return {"FINISHED"}


class JOKER_OT_match_portrait(_MatchOperator):
    """Fit the rig to the face in the reference photo: sets its identity (and, by the toggles, expression and head
    pose) in one undo step; the panel shows the aligned crop the prior will see"""

    bl_idname = "joker_head.match_portrait"
    bl_label = "Match Portrait"
    purpose, image_attr = "portrait", "reference"


class JOKER_OT_match_expression(_MatchOperator):
    """Take the expression and head pose of the face in the driving photo (identity stays): cross-reenactment"""

    bl_idname = "joker_head.match_expression"
    bl_label = "Match Expression"
    purpose, image_attr = "expression", "driving"


class _FinishedJobOperator(bpy.types.Operator):
    """An undoable operator on a finished job: ``job_id``, else the scene's latest job of ``job_attr``."""

    bl_options = {"REGISTER", "UNDO"}
    job_attr = ""  # the JokerHeadState field holding the latest job of this kind
    not_done = ""  # the poll message while there is none
    job_id: StringProperty(options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        job = find_job(context.scene, getattr(context.scene.joker_head, cls.job_attr))
        if job is None or job.state != "done":
            cls.poll_message_set(cls.not_done)
            return False
        return True

    def job(self, context):
        """The job this operator acts on: its ``job_id``, else the scene's latest of ``job_attr``."""
        return find_job(context.scene, self.job_id or getattr(context.scene.joker_head, self.job_attr))


class JOKER_OT_apply_fit(_FinishedJobOperator):
    """Set a finished fit on its rig again (Match Portrait: identity, plus expression and pose by the toggles;
    Match Expression: expression and pose)"""

    bl_idname = "joker_head.apply_fit"
    bl_label = "Apply Fit"
    job_attr, not_done = "fit_job", "No finished fit yet: press Match Portrait"

    def execute(self, context):
        import json

        from .shared.jobs import RigState
        from .shared.spec import SpecError, from_dict

        state = context.scene.joker_head
        job = self.job(context)
        rig_obj = bpy.data.objects.get(job.rig_name) if job is not None else None
        if rig_obj is None or not rig_obj.joker_rig.is_rig:
            self.report({"ERROR"}, "The fitted rig is gone: pick a rig and press Match Portrait again")
            return {"CANCELLED"}
        try:
            meta = json.loads(Path(job.result_path).read_text())["meta"]
            fitted = from_dict(RigState, meta["rig"])
        except (OSError, KeyError, ValueError, SpecError) as e:
            self.report({"ERROR"}, f"The fit's result is unreadable ({e}): press Match Portrait again")
            return {"CANCELLED"}
        portrait = job.purpose == "portrait"
        rig.apply_state(rig_obj, fitted, identity=portrait, expression=not portrait or state.match_expression,
                        pose=not portrait or state.match_pose)
        self.report({"INFO"}, f"{'Matched portrait' if portrait else 'Matched expression'} on {rig_obj.name}: "
                              f"{job.message}")
        return {"FINISHED"}


class JOKER_OT_cancel(bpy.types.Operator):
    """Cancel the running job (the backend stops at its next step)"""

    bl_idname = "joker_head.cancel"
    bl_label = "Cancel"
    job_id: StringProperty(options={"SKIP_SAVE"})

    @classmethod
    def poll(cls, context):
        state = context.scene.joker_head
        if not (_running(context, state.generate_job) or _running(context, state.preview_job)):
            cls.poll_message_set("No job is running")
            return False
        return True

    def execute(self, context):
        state = context.scene.joker_head
        ids = [self.job_id] if self.job_id else [j for j in (state.generate_job, state.preview_job)
                                                 if _running(context, j)]
        try:
            for job_id in ids:
                net.cancel(context.scene, job_id)
        except RuntimeError as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return {"FINISHED"}


class JOKER_OT_test_connection(bpy.types.Operator):
    """Contact the backend and show its name, devices and round-trip time"""

    bl_idname = "joker_head.test_connection"
    bl_label = "Test Connection"

    @classmethod
    def poll(cls, context):
        reason = net.blocked_reason(context)
        if reason:
            cls.poll_message_set(reason)
            return False
        return True

    def execute(self, context):
        try:
            net.test_connection(context.scene)
        except (RuntimeError, OSError, ValueError) as e:
            self.report({"ERROR"}, str(e))
            return {"CANCELLED"}
        return {"FINISHED"}


class JOKER_OT_import_result(_FinishedJobOperator):
    """Import a finished head onto its rig (the rig is hidden, not deleted; undo restores it)"""

    bl_idname = "joker_head.import_result"
    bl_label = "Import Result"
    job_attr, not_done = "generate_job", "No finished 3D result yet"

    def execute(self, context):
        state = context.scene.joker_head
        job = self.job(context)
        if job is None or not Path(job.result_path).is_file():
            self.report({"ERROR"}, "The result file is missing: reopen the file while the backend runs to fetch it "
                                   "again")
            return {"CANCELLED"}
        rig_obj = bpy.data.objects.get(job.rig_name) or state.rig
        obj = importer.import_glb(Path(job.result_path), name=f"Joker Head {job.job_id[:8]}")
        importer.place_on(obj, rig_obj)
        job.imported = True
        if importer.textured_material(obj) is None:
            self.report({"WARNING"}, "The result has no image-textured material")
        self.report({"INFO"}, f"Imported {obj.name} onto {rig_obj.name if rig_obj else 'the origin'}")
        return {"FINISHED"}


CLASSES = (JOKER_OT_add_rig, JOKER_OT_apply_preset, JOKER_OT_reset_expression, JOKER_OT_random_identity,
           JOKER_OT_reset_identity, JOKER_OT_refresh_normal_map, JOKER_OT_preview, JOKER_OT_generate,
           JOKER_OT_cancel, JOKER_OT_test_connection, JOKER_OT_import_result, JOKER_OT_match_portrait,
           JOKER_OT_match_expression, JOKER_OT_apply_fit)


register, unregister = bpy.utils.register_classes_factory(CLASSES)

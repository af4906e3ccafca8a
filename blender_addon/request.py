"""Build a job request from the scene: params per ``shared.jobs`` and the input frames (posed mesh, reference).

    vertices   float32 [V, 3]  the evaluated rig, rotated by its world rotation, head frame, metres
    faces      int32 [F, 3]    the model's normal-map region (what the prior's ControlNet sees)
    reference  PNG             the portrait, when one is picked
A fit job (Match Portrait / Match Expression) sends one photo file as stored (``images.photo_bytes``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np

from . import images, rig
from .shared import protocol as P
from .shared.config import DistillConfig, ExportConfig, PriorConfig
from .shared.jobs import FitParams, GenerateParams, PreviewParams
from .shared.spec import check


@dataclass
class Request:
    kind: str  # "preview", "generate" or "fit"
    params: Any  # PreviewParams | GenerateParams | FitParams
    inputs: dict[str, P.Payload]


def inputs_for(state: Any, obj: bpy.types.Object, depsgraph: bpy.types.Depsgraph | None = None) -> dict:
    """The input frames of a preview or generate job."""
    inputs: dict[str, P.Payload] = {
        "vertices": np.ascontiguousarray(rig.posed_vertices(obj, depsgraph), dtype=np.float32),
        "faces": np.ascontiguousarray(rig.model_for(obj).normal_region_faces, dtype=np.int32),
    }
    if state.reference is not None:
        inputs["reference"] = P.Png(images.image_to_png(state.reference))
    return inputs


def _distill(state) -> DistillConfig:
    """The preset, compressed into the step cap when one is set (both stages still run)."""
    cfg = DistillConfig(preset=state.quality)
    return cfg.with_steps(state.max_steps) if 0 < state.max_steps < cfg.resolved().steps else cfg


def build(scene: bpy.types.Scene, kind: str, depsgraph: bpy.types.Depsgraph | None = None) -> Request:
    """The request for ``kind`` from ``scene.joker_head``; raises shared.spec.SpecError on bad values."""
    state = scene.joker_head
    obj = state.rig
    if obj is None:
        raise ValueError("no head rig: add one with Add Head Rig")
    text = dict(prompt=state.prompt, negative_prompt=state.negative_prompt, seed=state.seed,
                reference_framing=state.reference_framing)
    own_model = state.base_model.strip() if state.prior_mode == "free" else ""
    prior = PriorConfig(mode=state.prior_mode, **({"base_model": own_model} if own_model else {}))
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    rig_state = rig.rig_state(obj, depsgraph)
    if kind == "preview":
        params = PreviewParams(**text, cfg=state.preview_cfg, steps=state.preview_steps, az_deg=state.view_az,
                               el_deg=state.view_el, rig=rig_state, prior=prior)
    elif kind == "generate":
        params = GenerateParams(**text, cfg=state.cfg, rig=rig_state, prior=prior,
                                distill=_distill(state),
                                export=ExportConfig(faces=state.faces, texture=int(state.texture),
                                                    resolution=int(state.mesh_resolution)))
    else:
        raise ValueError(f"kind: expected preview or generate, received {kind!r}")
    return Request(kind, check(params), inputs_for(state, obj, depsgraph))


def fit_request(scene: bpy.types.Scene, purpose: str) -> Request:
    """The fit job of Match Portrait (``purpose`` "portrait": the reference, everything fitted) or Match Expression
    ("expression": the driving photo, expression and pose fitted on the rig's own identity) for the scene rig's
    model; raises ValueError naming what is missing."""
    state = scene.joker_head
    if state.rig is None:
        raise ValueError("no head rig: add one with Add Head Rig")
    image = state.reference if purpose == "portrait" else state.driving
    if image is None:
        which = "Reference" if purpose == "portrait" else "Driving"
        raise ValueError(f"no {which.lower()} photo: pick one in the {which} field")
    params = FitParams(rig=state.rig.joker_rig.model)
    if purpose == "expression":  # the driving face's expression and pose, fitted on the artist's identity
        params = FitParams(rig=params.rig, fit_identity=False, init=rig.rig_state(state.rig))
    return Request("fit", check(params), {"photo": P.Blob(images.photo_bytes(image), "application/octet-stream")})

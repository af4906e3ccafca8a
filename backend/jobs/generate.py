"""The ``generate`` job: a textured 3D head from the posed rig, the reference portrait and the prompt.

1. views: the reference grid (``shared.conventions.reference_grid``) with the config's azimuths x elevations, each
   framed on the posed rig's landmarks as the reference frames them (``backend.jobs.views``)
2. guidance: normal maps of every view -> the prior (joker / free), or the oracle prior (a known textured head)
3. distillation (``backend.distill.distill``), checkpointed in the job's workdir; ``ctx.resume`` continues it
4. renders of the result (a contact sheet of five views) and 5. export to GLB (``backend.export.export_field``)

Progress stages: "normals", "prior", "distill" (metrics loss, level = the noise level t, distill_stage = 1 or 2;
a preview render at each target update; ETA), "export". Cancellation lands in any progress call.
The result's ``meta["costs"]`` holds what the job did (``backend.costs``: prior passes per sample, VAE images, NeRF
steps, ray samples) and wall seconds per stage (normals, prior_load, targets, optimisation, export), and
``meta["peak_cuda_gib"]`` the peak GPU memory on CUDA.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from backend.costs import CostCounter, peak_cuda_gib, reset_peak_cuda
from backend.jobs.photos import read_reference
from backend.jobs.views import distill_views
from backend.prior import load_prior
from backend.runner import Artifact, Input, JobContext, JobFailed, JobResult
from shared.conventions import HEAD_FRAME, HEAD_UNITS, Camera, orbit_camera
from shared.jobs import JOB_KINDS, GenerateParams
from shared.morphable import RigNotFound, load_default_rig, vertex_normals
from shared.paths import models_dir as default_models_dir
from shared.png import encode_png
from shared.spec import to_dict

PROGRESS_EVERY_S = 0.5  # step events are throttled to this interval (cancellation is checked every step)
SHEET_AZIMUTHS = (-45.0, -20.0, 0.0, 20.0, 45.0)


class GenerateRunner:
    kind = JOB_KINDS["generate"]

    def __init__(self, models_dir: Optional[Path] = None, implementation: str = "auto",
                 guidance_factory: Optional[Callable[..., Any]] = None, **_: Any) -> None:
        self.models_dir, self.implementation = models_dir, implementation
        self._guidance_factory = guidance_factory  # tests inject a guidance; None: by params.prior.mode

    def run(self, params: GenerateParams, inputs: dict[str, Input], ctx: JobContext) -> JobResult:
        from backend.distill import distill

        r = params.distill.resolved()
        counter = CostCounter()
        reset_peak_cuda(ctx.device)
        vertices, faces = _mesh(inputs)
        cameras, view_framing = distill_views(params.rig, vertices, r.n_az, r.n_el, r.view_az_deg, r.view_el_deg)
        if self._guidance_factory is not None:
            with counter.timed("prior_load", ctx.device):
                guidance = self._guidance_factory(params, inputs, vertices, faces, cameras, ctx)
        else:
            guidance = self._guidance(params, inputs, vertices, faces, cameras, ctx, counter)
        lpips, notes = self._lpips(r.lpips_weight, ctx)
        started, last = time.monotonic(), [0.0]

        def on_event(e) -> None:
            now = time.monotonic()
            ctx.check_cancelled()
            if e.kind == "targets" or now - last[0] >= PROGRESS_EVERY_S or e.step == e.total:
                last[0] = now
                what = f"Stage {e.stage}, level t={e.t}" if e.stage else f"dynamic targets, t={e.t}"
                metrics = {"level": e.t, "distill_stage": e.stage, **({"loss": e.loss} if e.loss == e.loss else {})}
                ctx.progress("distill", e.step, e.total, f"{what}, step {e.step} of {e.total}", preview=e.preview,
                             eta_s=e.eta_s, **metrics)

        result = distill(guidance, cameras, params.distill, device=ctx.device, lpips=lpips, seed=params.seed,
                         workdir=Path(ctx.workdir) / "distill", resume=ctx.resume, callback=on_event,
                         implementation=self.implementation, counter=counter)
        sheet = render_sheet(result.field, result.occupancy, r.resolutions[-1], r.samples_per_ray)
        artifacts = [Artifact("renders.png", "image/png", _png(sheet))]
        meta = {"preset": params.distill.preset, "distill": to_dict(r), "mode": params.prior.mode,
                "steps": result.steps, "resumed_from": result.resumed_from, "distill_s": round(result.seconds, 1),
                "final_loss": result.losses[-1] if result.losses else None, "notes": notes,
                "units": HEAD_UNITS, "frame": HEAD_FRAME, "view_framing": view_framing}
        with counter.timed("export", ctx.device):
            glb, export_meta, files = self._export(result.field, params, ctx, cameras)
        if glb is not None:
            artifacts.insert(0, Artifact("head.glb", "model/gltf-binary", glb))
        if "visibility.png" in files:  # which texels the views saw (255) and which the export completed (0)
            artifacts.append(Artifact("visibility.png", "image/png", files["visibility.png"]))
        meta["export"] = export_meta
        meta["total_s"] = round(time.monotonic() - started, 1)
        meta["costs"] = counter.as_dict()
        meta["peak_cuda_gib"] = peak_cuda_gib(ctx.device)
        return JobResult(meta, artifacts)

    # --- 2. guidance ------------------------------------------------------------------------------------------------
    def _guidance(self, params: GenerateParams, inputs: dict[str, Input], vertices: np.ndarray, faces: np.ndarray,
                  cameras: list[Camera], ctx: JobContext, counter: CostCounter):
        r = params.distill.resolved()
        if params.prior.mode == "oracle":
            from backend.distill.oracle import OracleGuidance

            ctx.progress("prior", 0, 1, "oracle prior: rendering the known head from every view")
            with counter.timed("prior_load"):
                oracle = OracleGuidance(oracle_head_for(params, vertices, faces), cameras, r.resolutions[-1])
            ctx.progress("prior", 1, 1, "oracle prior ready")
            return oracle
        import torch

        from backend.prior.guidance import PriorGuidance
        from backend.render import render_normal_maps

        ctx.progress("prior", 0, 1, f"loading the {params.prior.mode} prior")
        with counter.timed("prior_load", ctx.device):
            prior = load_prior(params.prior, self.models_dir, ctx.device)  # JobFailed names missing files
        ctx.progress("normals", 0, len(cameras), "rendering normal maps of every view")
        views = [c.scaled(prior.resolution) for c in cameras]
        with counter.timed("normals", ctx.device):
            maps = render_normal_maps(torch.from_numpy(vertices), torch.from_numpy(faces), views, device=ctx.device)
        ctx.progress("normals", len(cameras), len(cameras), "normal maps ready")
        reference = None
        if inputs.get("reference") is not None:
            ref = read_reference(inputs["reference"], prior.resolution, params.reference_framing, ctx)
            reference = torch.from_numpy(ref)[None]
        with counter.timed("prior_load", ctx.device):  # text, reference and control encodings are prior set-up
            guidance = PriorGuidance(prior, maps.cpu().numpy(), reference, params.prompt, params.negative_prompt,
                                     cfg=params.cfg)
        counter.merge(prior.counter.snapshot())  # this job's prior: its set-up (the reference's encode) counts too
        return guidance

    # --- 3. LPIPS ----------------------------------------------------------------------------------------------------
    def _lpips(self, weight: float, ctx: JobContext):
        """The LPIPS network when the config uses it and its weights are in the models dir; else None and a note."""
        if weight <= 0:
            return None, []
        from backend.distill.lpips import LPIPS, WEIGHTS_NAME, find_lpips_weights

        root = Path(self.models_dir or default_models_dir())
        path = find_lpips_weights(root)
        if path is None:
            note = (f"LPIPS weights are not at {root / WEIGHTS_NAME}: distilling with L1 alone (see "
                    "docs/DISTILLATION.md, 'LPIPS weights', to add them)")
            ctx.progress("distill", 0, 1, note)
            return None, [note]
        return LPIPS.from_file(path), []

    # --- 5. export -----------------------------------------------------------------------------------------------------
    def _export(self, field, params: GenerateParams, ctx: JobContext, cameras: list[Camera]
                ) -> tuple[Optional[bytes], dict, dict[str, bytes]]:
        from backend.export import export_field  # the package imports torch, trimesh and xatlas
        from backend.export.errors import ExportError

        def progress(stage: str, step: int, total: int) -> None:
            ctx.progress("export", step, total, stage)

        completion = completion_for(params, cameras)
        try:
            out = export_field(field, params.export, progress=progress, completion=completion)
        except ExportError as e:
            raise ExportError(f"export: {e}", e.hint, e.code) from e
        if completion is None:
            out.meta["completion_note"] = (f"the backend has no rig named {params.rig.model!r}: the head is exported "
                                           "as the views saw it, without completion behind and above")
        return out.glb, out.meta, out.files


def completion_for(params: GenerateParams, cameras: list[Camera]):
    """The posed rig's closed body and the training views (``backend.export.Completion``), or None when the backend
    does not have the named rig (then the export keeps what the views saw)."""
    from backend.export import Completion, rig_body

    rig = params.rig
    try:
        model = load_default_rig(rig.model)
    except (RigNotFound, ValueError):
        return None
    vertices = model.evaluate(rig.identity or None, dict(rig.expressions) or None, rig.pose, rig.gaze)
    return Completion(rig_body(model, vertices), cameras)


def oracle_head_for(params: GenerateParams, vertices: np.ndarray, faces: np.ndarray):
    """The oracle's head: the named rig posed as the request says when the backend has it, else the sent mesh."""
    from backend.distill.oracle import OracleHead, oracle_head, procedural_albedo, LIGHT_DIR

    rig = params.rig
    try:
        model = load_default_rig(rig.model)
    except (RigNotFound, ValueError):
        model = None
    if model is not None:
        return oracle_head(model, rig.identity or None, dict(rig.expressions) or None, rig.pose, rig.gaze)
    v, f = vertices.astype(np.float64), faces.astype(np.int64)
    shade = 0.35 + 0.65 * np.clip(vertex_normals(v, f, area_weighted=True) @ LIGHT_DIR, 0.0, 1.0)
    return OracleHead(v, f, procedural_albedo(v, np.tile([0.80, 0.58, 0.47], (len(v), 1))) * shade[:, None])


def render_sheet(field, occupancy, res: int, samples_per_ray: int) -> np.ndarray:
    """uint8 [res, 5 res, 3]: the field from five azimuths at elevation 0."""
    import torch

    from backend.render.volume import render_image

    with torch.no_grad():
        imgs = [render_image(field, orbit_camera(az, 0.0, res), samples_per_ray, occupancy)["rgb"]
                for az in SHEET_AZIMUTHS]
    sheet = torch.cat(imgs, dim=2).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (sheet * 255.0).round().astype(np.uint8)


def _mesh(inputs: dict[str, Input]) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.asarray(inputs["vertices"], dtype=np.float32)
    faces = np.asarray(inputs["faces"]).astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise JobFailed(f"inputs.faces: expected indices in [0, {len(vertices)}), received "
                        f"[{faces.min()}, {faces.max()}]", "send faces that index the vertices array",
                        code="invalid_input")
    return vertices, faces


def _png(image: np.ndarray) -> bytes:
    return encode_png(image)

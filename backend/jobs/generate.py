"""The ``generate`` job: a textured 3D head from the posed rig, the reference portrait and the prompt.

:meth:`GenerateRunner.run` is the sequencer; each step is one call:

1. views: the reference grid (``shared.conventions.reference_grid``) with the config's azimuths x elevations, each
   framed on the posed rig's landmarks as the reference frames them (``backend.jobs.views.distill_views``)
2. guidance: normal maps of every view -> the prior (joker / free; loaded once per device by the shared
   ``backend.prior.cache.PriorCache``), or the oracle prior (``backend.distill.oracle.oracle_head_for``)
3. LPIPS: its network when the config weights it and the weights are present, else L1 alone and a note
4. distillation (``backend.distill.distill``), checkpointed in the job's workdir; ``ctx.resume`` continues it
5. renders: a contact sheet of the result from five azimuths (:func:`render_sheet`)
6. export to GLB (``backend.export.export_field``), completed behind and above by the posed rig (:func:`completion_for`)
7. result: head.glb, renders.png, visibility.png and the metadata

Inputs (the mesh and its index checks, the reference portrait) are read by ``backend.jobs.inputs``.
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
from backend.jobs.inputs import read_mesh, read_reference_input
from backend.jobs.views import distill_views
from backend.prior.cache import PriorCache
from backend.runner import Artifact, Input, JobContext, JobResult
from shared.conventions import HEAD_FRAME, HEAD_UNITS, Camera, orbit_camera
from shared.jobs import JOB_KINDS, GenerateParams
from shared.morphable import RigNotFound, load_default_rig
from shared.paths import models_dir as default_models_dir
from shared.png import encode_png
from shared.spec import to_dict

PROGRESS_EVERY_S = 0.5  # step events are throttled to this interval (cancellation is checked every step)
SHEET_AZIMUTHS = (-45.0, -20.0, 0.0, 20.0, 45.0)


class GenerateRunner:
    kind = JOB_KINDS["generate"]

    def __init__(self, models_dir: Optional[Path] = None, implementation: str = "auto",
                 guidance_factory: Optional[Callable[..., Any]] = None, priors: Optional[PriorCache] = None,
                 **_: Any) -> None:
        self.models_dir, self.implementation = models_dir, implementation
        self._guidance_factory = guidance_factory  # tests inject a guidance; None: by params.prior.mode
        self.priors = priors if priors is not None else PriorCache()  # default_runners shares one with preview

    def run(self, params: GenerateParams, inputs: dict[str, Input], ctx: JobContext) -> JobResult:
        """1. views -> 2. guidance -> 3. LPIPS -> 4. distillation -> 5. renders -> 6. export -> 7. result."""
        r = params.distill.resolved()
        counter = CostCounter()
        reset_peak_cuda(ctx.device)
        vertices, faces = read_mesh(inputs)
        # 1. views
        cameras, view_framing = distill_views(params.rig, vertices, r.n_az, r.n_el, r.view_az_deg, r.view_el_deg)
        # 2. guidance
        guidance = self._guidance(params, inputs, vertices, faces, cameras, ctx, counter)
        # 3. LPIPS
        lpips, notes = self._lpips(r.lpips_weight, ctx)
        # 4. distillation
        started = time.monotonic()
        result = self._distill(guidance, cameras, params, lpips, ctx, counter)
        # 5. renders
        sheet = render_sheet(result.field, result.occupancy, r.resolutions[-1], r.samples_per_ray)
        # 6. export
        with counter.timed("export", ctx.device):
            glb, export_meta, files = self._export(result.field, params, ctx, cameras)
        # 7. result
        artifacts = ([Artifact("head.glb", "model/gltf-binary", glb)] if glb is not None else []) + \
            [Artifact("renders.png", "image/png", encode_png(sheet))]
        if "visibility.png" in files:  # which texels the views saw (255) and which the export completed (0)
            artifacts.append(Artifact("visibility.png", "image/png", files["visibility.png"]))
        meta = {"preset": params.distill.preset, "distill": to_dict(r), "mode": params.prior.mode,
                "steps": result.steps, "resumed_from": result.resumed_from, "distill_s": round(result.seconds, 1),
                "final_loss": result.losses[-1] if result.losses else None, "notes": notes,
                "units": HEAD_UNITS, "frame": HEAD_FRAME, "view_framing": view_framing, "export": export_meta,
                "total_s": round(time.monotonic() - started, 1), "costs": counter.as_dict(),
                "peak_cuda_gib": peak_cuda_gib(ctx.device)}
        return JobResult(meta, artifacts)

    # --- 2. guidance ------------------------------------------------------------------------------------------------
    def _guidance(self, params: GenerateParams, inputs: dict[str, Input], vertices: np.ndarray, faces: np.ndarray,
                  cameras: list[Camera], ctx: JobContext, counter: CostCounter):
        if self._guidance_factory is not None:
            with counter.timed("prior_load", ctx.device):
                return self._guidance_factory(params, inputs, vertices, faces, cameras, ctx)
        r = params.distill.resolved()
        if params.prior.mode == "oracle":
            from backend.distill.oracle import OracleGuidance, oracle_head_for

            ctx.progress("prior", 0, 1, "oracle prior: rendering the known head from every view")
            with counter.timed("prior_load"):
                oracle = OracleGuidance(oracle_head_for(params.rig, vertices, faces), cameras, r.resolutions[-1])
            ctx.progress("prior", 1, 1, "oracle prior ready")
            return oracle
        import torch

        from backend.prior.guidance import PriorGuidance
        from backend.render import render_normal_maps

        ctx.progress("prior", 0, 1, f"loading the {params.prior.mode} prior")
        with counter.timed("prior_load", ctx.device):
            prior = self.priors.get(params.prior, self.models_dir, ctx.device)  # PriorError names missing files
        ctx.progress("normals", 0, len(cameras), "rendering normal maps of every view")
        views = [c.scaled(prior.resolution) for c in cameras]
        with counter.timed("normals", ctx.device):
            maps = render_normal_maps(torch.from_numpy(vertices), torch.from_numpy(faces), views, device=ctx.device)
        ctx.progress("normals", len(cameras), len(cameras), "normal maps ready")
        ref = read_reference_input(inputs, prior.resolution, params.reference_framing, ctx)
        reference = torch.from_numpy(ref)[None] if ref is not None else None
        before = prior.counter.snapshot()  # the prior is shared between jobs: count this job's share only
        with counter.timed("prior_load", ctx.device):  # text, reference and control encodings are prior set-up
            guidance = PriorGuidance(prior, maps.cpu().numpy(), reference, params.prompt, params.negative_prompt,
                                     cfg=params.cfg)
        counter.merge(prior.counter.since(before))  # this job's prior set-up (the reference's encode) counts too
        return guidance

    # --- 4. distillation ----------------------------------------------------------------------------------------------
    def _distill(self, guidance: Any, cameras: list[Camera], params: GenerateParams, lpips: Any, ctx: JobContext,
                 counter: CostCounter):
        """``backend.distill.distill`` with progress events (throttled to PROGRESS_EVERY_S, every target update and
        the last step) and cancellation checked at every step."""
        from backend.distill import distill

        last = [0.0]

        def on_event(e) -> None:
            now = time.monotonic()
            ctx.check_cancelled()
            if e.kind == "targets" or now - last[0] >= PROGRESS_EVERY_S or e.step == e.total:
                last[0] = now
                what = f"Stage {e.stage}, level t={e.t}" if e.stage else f"dynamic targets, t={e.t}"
                metrics = {"level": e.t, "distill_stage": e.stage, **({"loss": e.loss} if e.loss == e.loss else {})}
                ctx.progress("distill", e.step, e.total, f"{what}, step {e.step} of {e.total}", preview=e.preview,
                             eta_s=e.eta_s, **metrics)

        return distill(guidance, cameras, params.distill, device=ctx.device, lpips=lpips, seed=params.seed,
                       workdir=Path(ctx.workdir) / "distill", resume=ctx.resume, callback=on_event,
                       implementation=self.implementation, counter=counter)

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

    # --- 6. export -----------------------------------------------------------------------------------------------------
    def _export(self, field, params: GenerateParams, ctx: JobContext, cameras: list[Camera]
                ) -> tuple[Optional[bytes], dict, dict[str, bytes]]:
        from backend.export import export_field  # the package imports torch, trimesh and xatlas
        from backend.export.errors import ExportError

        def progress(stage: str, step: int, total: int) -> None:
            ctx.progress("export", step, total, stage)

        completion = completion_for(params, cameras)
        if completion is not None:  # the distilled field's environment map: texels showing it are not trusted
            completion.background = getattr(field, "background", None)
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


def render_sheet(field, occupancy, res: int, samples_per_ray: int) -> np.ndarray:
    """uint8 [res, 5 res, 3]: the field from five azimuths at elevation 0."""
    import torch

    from backend.render.volume import render_image

    with torch.no_grad():
        imgs = [render_image(field, orbit_camera(az, 0.0, res), samples_per_ray, occupancy)["rgb"]
                for az in SHEET_AZIMUTHS]
    sheet = torch.cat(imgs, dim=2).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (sheet * 255.0).round().astype(np.uint8)

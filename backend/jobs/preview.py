"""The ``preview`` job: one view of the posed rig through the 2D prior -> PNG.

1. render the normal map of the view (``backend.render.render_normal_maps``, camera ``shared.conventions.orbit_camera``)
2. load the prior (kept per device between jobs: loading SD1.5-size weights takes far longer than a preview)
3. encode the reference portrait (optional: without one, text and normals alone drive the image), framed on the
   face's landmarks as the prior was trained (``backend.jobs.photos.read_reference``) unless the request asks for
   a centre crop
4. denoise with progress per step (cancellation lands there), decode, return image.png and normals.png
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from backend.jobs.photos import read_reference
from backend.jobs.views import framed
from backend.prior import load_prior
from backend.prior.layout import single_file
from backend.runner import Artifact, Input, JobContext, JobFailed, JobResult
from shared.config.prior import PriorConfig
from shared.conventions import Camera, normals_to_control, orbit_camera
from shared.jobs import JOB_KINDS, PreviewParams
from shared.paths import models_dir as default_models_dir
from shared.png import encode_png
from shared.spec import to_dict

RenderNormals = Callable[[np.ndarray, np.ndarray, list[Camera]], Any]  # -> uint8 [N, H, W, 3]


def _default_render(vertices: np.ndarray, faces: np.ndarray, cameras: list[Camera]) -> Any:
    from backend.render import render_normal_maps  # the rig work's batched rasterizer; imported when a job needs it

    return render_normal_maps(vertices, faces, cameras)




class PreviewRunner:
    kind = JOB_KINDS["preview"]

    def __init__(self, models_dir: Optional[Path] = None, render_normals: Optional[RenderNormals] = None,
                 **_: Any) -> None:
        self.models_dir = models_dir
        self._render = render_normals or _default_render
        self._priors: dict[str, tuple[tuple, Any]] = {}  # device -> (config key, prior)
        self._lock = threading.Lock()

    def prior(self, config: PriorConfig, device: str) -> Any:
        """The loaded prior for ``config`` on ``device`` (reused while the config's model fields stay the same)."""
        key = tuple(sorted(to_dict(config).items()))
        root = Path(self.models_dir or default_models_dir())
        own = single_file(root, config.base_model)
        if own is not None and own.exists():  # an artist re-saving their fine-tune under the same name reloads it
            stat = own.stat()
            key += ((str(own), stat.st_mtime_ns, stat.st_size),)
        with self._lock:
            cached = self._priors.get(device)
            if cached and cached[0] == key:
                return cached[1]
            self._priors.pop(device, None)  # free the old weights before loading new ones
            prior = load_prior(config, root, device)
            self._priors[device] = (key, prior)
            return prior

    def run(self, params: PreviewParams, inputs: dict[str, Input], ctx: JobContext) -> JobResult:
        import torch

        from backend.prior.prior import out_of_memory_as_job_error

        if params.prior.mode == "oracle":
            raise JobFailed("prior.mode: the oracle prior makes distillation targets only and has no 2D preview",
                            "choose mode joker or free", code="invalid_field")
        ctx.progress("load", 0, 1, f"loading the {params.prior.mode} prior")
        with out_of_memory_as_job_error():
            prior = self.prior(params.prior, ctx.device)
            normals = self._normal_map(inputs, params, prior.resolution)
            reference = None
            if inputs.get("reference") is not None:
                ref = read_reference(inputs["reference"], prior.resolution, params.reference_framing, ctx)
                reference = prior.prepare_reference(torch.from_numpy(ref)[None])
            control = prior.prepare_control(torch.from_numpy(normals_to_control(normals))[None])
            started = time.monotonic()

            def step(done: int, total: int) -> None:
                eta = (time.monotonic() - started) / done * (total - done)
                ctx.progress("denoise", done, total, f"step {done} of {total}", eta_s=eta)

            generator = torch.Generator().manual_seed(params.seed)
            image = prior.generate(control, params.prompt, params.negative_prompt, reference, steps=params.steps,
                                   cfg=params.cfg, sampler=params.sampler, generator=generator, callback=step)
        rgb = (image[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
        meta = {"seed": params.seed, "steps": params.steps, "sampler": params.sampler, "cfg": params.cfg,
                "mode": params.prior.mode, "resolution": prior.resolution, "reference": reference is not None,
                "reference_framing": params.reference_framing if reference is not None else None,
                "az_deg": params.az_deg, "el_deg": params.el_deg}
        return JobResult(meta, [Artifact("image.png", "image/png", encode_png(rgb)),
                                Artifact("normals.png", "image/png", encode_png(normals))])

    def _normal_map(self, inputs: dict[str, Input], params: PreviewParams, resolution: int) -> np.ndarray:
        """uint8 [R, R, 3] normal map of the posed mesh seen from (az, el)."""
        vertices = np.asarray(inputs["vertices"], dtype=np.float32)
        faces = np.asarray(inputs["faces"])
        if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
            raise JobFailed(f"inputs.faces: expected indices in [0, {len(vertices)}), received "
                            f"[{faces.min()}, {faces.max()}]", "send faces that index the vertices array",
                            code="invalid_input")
        # framed on the rig's landmarks as the prior's training views were (centred for other meshes)
        camera = framed([orbit_camera(params.az_deg, params.el_deg, res=resolution)], params.rig, vertices)[0][0]
        maps = self._render(vertices, faces, [camera])
        maps = maps.cpu().numpy() if hasattr(maps, "cpu") else np.asarray(maps)
        return np.ascontiguousarray(maps[0], dtype=np.uint8)

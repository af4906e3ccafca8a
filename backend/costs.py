"""Cost counters: what a job did, counted by the code that does the work, and wall time per stage.

The prior owns one :class:`CostCounter` and adds to it at every UNet / reference-UNet / ControlNet pass and VAE
call; the distillation loop and the volume renderer add NeRF steps and ray samples; the ``generate`` job times its
stages. Counts are per sample (one row of a batch), so a CFG evaluation of B views adds 2B UNet samples.
A head's cost is these counts times per-unit costs (``shared.config.distill`` ``estimated_seconds``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator, Optional

# Prior (backend.prior): per sample, i.e. per row of the batch a network ran on.
UNET = "unet_samples"  # denoiser rows (CFG doubles them)
REF_UNET = "ref_unet_samples"  # reference-UNet rows (once per level and branch with the reference cache)
CONTROLNET = "controlnet_samples"
VAE_ENCODES = "vae_encodes"  # images encoded (renders, and the reference portrait once)
VAE_DECODES = "vae_decodes"
PRIOR_EVALS = "prior_evals"  # guided noise predictions per view (one view at one DDIM step, all CFG branches)
# Distillation (backend.distill, backend.render.volume).
NERF_STEPS = "nerf_steps"  # optimisation steps
TARGET_UPDATES = "target_updates"  # scheduled target refreshes (every view) or dynamic batches
TARGET_VIEWS = "target_views"  # views rendered and sent to the prior for targets
RAYS = "rays"  # rays marched (training patches, target renders, previews)
RAY_SAMPLES = "ray_samples"  # samples inside the bound that survive empty-space skipping (field evaluations)
SHADED_SAMPLES = "shaded_samples"  # samples of the differentiable pass (after nerfacc-style pruning)
TARGET_RAYS, TARGET_RAY_SAMPLES = "target_" + RAYS, "target_" + RAY_SAMPLES  # the target renders' share of both

# Stage wall times of a generate job, in the order they run ("target_renders" is the renders' share of "targets").
STAGES = ("normals", "prior_load", "targets", "optimisation", "export")


class CostCounter:
    """Integer counts by name and wall seconds by stage. Not thread-safe: one job (or one prior) owns one."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n)

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts)

    def since(self, snapshot: dict[str, int]) -> dict[str, int]:
        """Counts added after ``snapshot`` (a prior kept between jobs reports one job's share)."""
        return {k: v - snapshot.get(k, 0) for k, v in self.counts.items() if v != snapshot.get(k, 0)}

    def merge(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.add(k, v)

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + float(seconds)

    @contextlib.contextmanager
    def timed(self, stage: str, device: Optional[str] = None) -> Iterator[None]:
        """Add the block's wall time to ``stage``; on a CUDA ``device`` the queued GPU work is waited for at both
        ends, so the time is the stage's and not whatever the GPU still had queued."""
        _sync(device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            _sync(device)
            self.add_seconds(stage, time.perf_counter() - t0)

    def as_dict(self) -> dict[str, dict]:
        """JSON-ready: {"counts": {name: int}, "seconds": {stage: s rounded to ms}}."""
        return {"counts": dict(sorted(self.counts.items())),
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def _sync(device: Optional[str]) -> None:
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def peak_cuda_gib(device: Optional[str]) -> Optional[float]:
    """Peak memory torch allocated on a CUDA ``device`` since its last reset, in GiB; None elsewhere."""
    if device is None or not str(device).startswith("cuda"):
        return None
    import torch

    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def reset_peak_cuda(device: Optional[str]) -> None:
    if device is not None and str(device).startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats(device)

"""Settings of the progressive distillation (schedule, views, resolutions, field) and its presets.

Every knob defaults to ``None``, meaning "the preset's value": a request may send just ``{"preset": "draft"}`` or
override single fields (``{"preset": "fast", "steps": 8000}``). :meth:`DistillConfig.resolved` returns the config
with every knob filled in; the distillation code only ever reads resolved configs.

The ``paper`` preset is the reference schedule (docs/REFERENCE.md §4): 400 views, 100 DDIM levels, targets
refreshed every 130 steps, Stage 1 (one-step x0) for the first 60 levels, one 40-step DDIM run (Stage 2) from the
level reached, 20k steps, render resolution 64 -> 512 at steps 200/3000/4500/7000, L1 + LPIPS + 1e-6 sparsity.
That is 60 x 400 + 40 x 400 = 40,000 prior evaluations (one view at one DDIM step, CFG batch 2) and 20,000 NeRF steps.
``turbo`` asks for 1,600 (1/25) and 2,000 steps; docs/DISTILLATION.md says what it gives up.
"""

from __future__ import annotations

import dataclasses
import bisect
from dataclasses import dataclass
from typing import Optional

from ..spec import SpecError, spec

PRESETS: dict[str, dict[str, object]] = {
    "paper": dict(
        n_az=20, n_el=20, levels=100, stage1_fraction=0.6, update_every=130, steps=20_000, batch_views=64, patch=64,
        resolutions=(64, 128, 256, 384, 512), milestones=(200, 3000, 4500, 7000), samples_per_ray=200,
        grid_levels=16, grid_log2_table=19, grid_base_res=16, grid_per_level_scale=1.447269,
        lr_grid=1e-2, lr_mlp=1e-3, lpips_weight=1.0, sparsity_weight=1e-6, occupancy_res=32,
        targets="progressive", checkpoint_every=500),
    # A GPU preset at about a third of the reference's time: fewer views and levels, 384 px at the end.
    "fast": dict(
        n_az=12, n_el=10, levels=50, stage1_fraction=0.6, update_every=80, steps=6_000, batch_views=32, patch=64,
        resolutions=(64, 128, 256, 384), milestones=(100, 1000, 2000), samples_per_ray=160,
        grid_levels=16, grid_log2_table=19, grid_base_res=16, grid_per_level_scale=1.447269,
        lr_grid=1e-2, lr_mlp=1e-3, lpips_weight=1.0, sparsity_weight=1e-6, occupancy_res=32,
        targets="progressive", checkpoint_every=500),
    # Minutes on one GPU: 40 views x 40 levels = 1,600 prior evaluations (1/25 of the paper's 40,000), 2,000 steps,
    # 256 px at the end (what the prior still reads well, upsampled to 512 inside), the 60/40 stage split and Stage 2
    # at 40% of the steps kept; MLP lr 1e-2 as in draft (1e-3 is too slow for a ~2k-step budget).
    "turbo": dict(
        n_az=8, n_el=5, levels=40, stage1_fraction=0.6, update_every=33, steps=2_000, batch_views=12, patch=64,
        resolutions=(64, 128, 256), milestones=(100, 600), samples_per_ray=128,
        grid_levels=16, grid_log2_table=19, grid_base_res=16, grid_per_level_scale=1.447269,
        lr_grid=1e-2, lr_mlp=1e-2, lpips_weight=1.0, sparsity_weight=1e-6, occupancy_res=32,
        targets="progressive", checkpoint_every=250),
    # Small enough for a 2-core CPU demo in minutes: 40 views at 64 px, a small hash grid, L1 only, and MLP/background
    # learning rate 1e-2 (1e-3 converges too slowly for a ~1k-step budget).
    "draft": dict(
        n_az=8, n_el=5, levels=20, stage1_fraction=0.6, update_every=45, steps=1_500, batch_views=4, patch=32,
        resolutions=(48, 64), milestones=(100,), samples_per_ray=64,
        grid_levels=8, grid_log2_table=16, grid_base_res=16, grid_per_level_scale=1.486,
        lr_grid=1e-2, lr_mlp=1e-2, lpips_weight=0.0, sparsity_weight=1e-6, occupancy_res=32,
        targets="progressive", checkpoint_every=200),
}

# Per-unit costs of :meth:`DistillConfig.estimated_seconds`, one set per device kind, each with its source:
#   train_msample_s  seconds per million training ray samples marched (after empty-space skipping; fwd + bwd)
#   render_msample_s seconds per million samples of the full-view target renders (no gradients)
#   target_view_s    one Stage-1 target of one view: encode, one CFG (2-row) ControlNet + UNet pass, decode
#   ddim_view_s      each further Stage-2 DDIM step of one view (CFG ControlNet + UNet, no VAE)
# "cpu": measured by bench/distill_oracle.py (draft: 451 s for 1500 steps on one thread, the oracle prior); the
# render cost is a third of the training one (forward only), not measured on its own.
# "cuda": CALCULATED, not measured (no GPU has run this code yet): FLOPs per pass of SD1.5 at 512 px (UNet ~0.8
# TFLOP, ControlNet ~0.3, VAE encoder ~1.1, decoder ~2.5 per image) at an assumed 300 TFLOP/s of bf16 (40% of an
# H100/H200's dense peak), and ~8 ns per trained sample of the hash-grid NeRF. bench/gpu_check.sh prints measured
# values in this form (its "costs:" line); paste them here with source "measured" once it has run on a GPU.
COSTS: dict[str, dict[str, object]] = {
    "cpu": dict(train_msample_s=3.3, render_msample_s=1.1, target_view_s=0.004, ddim_view_s=0.004,
                source="measured"),
    "cuda": dict(train_msample_s=0.008, render_msample_s=0.003, target_view_s=0.019, ddim_view_s=0.0073,
                 source="calculated"),
}
OCCUPIED = 0.35  # share of marched samples that survive empty-space skipping on a head (measured on the CPU runs)


@dataclass
class DistillConfig:
    preset: str = spec("paper", choices=tuple(PRESETS), doc="paper: the reference schedule; fast: GPU, ~1/3 the "
                       "time; turbo: GPU, minutes (1/25 of the paper's prior passes, 256 px); draft: a CPU demo in "
                       "minutes. Fields left empty take the preset's value")
    n_az: Optional[int] = spec(None, lo=1, hi=64, doc="views: azimuths in [-view_az_deg, view_az_deg] (20 in the "
                               "reference)")
    n_el: Optional[int] = spec(None, lo=1, hi=64, doc="views: elevations in [-view_el_deg, view_el_deg] (20 in the "
                               "reference)")
    # The view range is the same for every preset (the reference's), so it has a value rather than None: widen it
    # where the prior can draw the side or the back of a head; the export completes what the views never saw.
    view_az_deg: float = spec(45.0, lo=0.0, hi=180.0, doc="views: azimuth half-range in degrees (45 in the "
                              "reference; 180 goes all around)")
    view_el_deg: float = spec(20.0, lo=0.0, hi=80.0, doc="views: elevation half-range in degrees (20 in the "
                              "reference)")
    levels: Optional[int] = spec(None, lo=2, hi=1000, doc="DDIM noise levels from t=999 down (100 in the reference)")
    stage1_fraction: Optional[float] = spec(None, lo=0.0, hi=1.0,
                                            doc="share of levels run as Stage 1 (one-step x0 per level); the rest "
                                                "is one multi-step DDIM run (Stage 2). 0.6 in the reference")
    update_every: Optional[int] = spec(None, lo=1, hi=100_000, doc="steps between target updates (130)")
    steps: Optional[int] = spec(None, lo=1, hi=1_000_000, doc="optimisation steps in total (20000)")
    batch_views: Optional[int] = spec(None, lo=1, hi=1024, doc="views per optimisation step (64)")
    patch: Optional[int] = spec(None, lo=8, hi=512, doc="random patch side in pixels, shared by the batch (64)")
    resolutions: Optional[tuple[int, ...]] = spec(None, lo=8, hi=1024, max_len=16,
                                                  doc="render resolutions, one per phase (64,128,256,384,512)")
    milestones: Optional[tuple[int, ...]] = spec(None, lo=0, hi=1_000_000, max_len=15,
                                                 doc="steps at which the next resolution starts (200,3000,4500,7000)")
    samples_per_ray: Optional[int] = spec(None, lo=8, hi=1024,
                                          doc="ray-marching samples across the bound's diagonal (200)")
    grid_levels: Optional[int] = spec(None, lo=1, hi=32, doc="hash-grid levels (16), 2 features each")
    grid_log2_table: Optional[int] = spec(None, lo=8, hi=24, doc="log2 of the hash table size per level (19)")
    grid_base_res: Optional[int] = spec(None, lo=2, hi=512, doc="coarsest grid resolution (16)")
    grid_per_level_scale: Optional[float] = spec(None, lo=1.01, hi=4.0, doc="resolution growth per level (1.447269)")
    lr_grid: Optional[float] = spec(None, lo=0.0, hi=1.0, doc="AdamW learning rate of the hash grid (1e-2)")
    lr_mlp: Optional[float] = spec(None, lo=0.0, hi=1.0, doc="AdamW learning rate of MLPs and background (1e-3)")
    lpips_weight: Optional[float] = spec(None, lo=0.0, hi=100.0, doc="LPIPS(VGG) weight (1.0); needs VGG weights")
    sparsity_weight: Optional[float] = spec(None, lo=0.0, hi=1.0, doc="opacity sparsity weight (1e-6)")
    occupancy_res: Optional[int] = spec(None, lo=4, hi=256, doc="occupancy grid resolution for empty-space skip (32)")
    targets: Optional[str] = spec(None, choices=("progressive", "dynamic"),
                                  doc="progressive: the Joker schedule; dynamic: a fresh random noise level every "
                                      "step (SDS-style baseline, for comparisons)")
    checkpoint_every: Optional[int] = spec(None, lo=1, hi=1_000_000, doc="steps between checkpoints (resume)")

    def validate(self) -> None:
        r = self.resolved()
        if len(r.milestones) != len(r.resolutions) - 1:
            raise SpecError("distill.milestones", f"{len(r.resolutions) - 1} steps (one fewer than resolutions)",
                            list(r.milestones), "give one milestone between each pair of resolutions")
        if list(r.milestones) != sorted(r.milestones):
            raise SpecError("distill.milestones", "increasing steps", list(r.milestones), "sort them")

    def with_steps(self, steps: int) -> "DistillConfig":
        """The whole schedule compressed (or stretched) into ``steps`` optimisation steps.

        Target updates and resolution milestones scale with it, so both stages still run and the last part of the
        budget still fits the frozen Stage 2 targets — a step cap never silently drops Stage 2.
        """
        r = self.resolved()
        scale = steps / r.steps
        return dataclasses.replace(
            self, steps=steps, update_every=max(1, int(r.update_every * scale)),
            milestones=tuple(max(1, round(m * scale)) for m in r.milestones),
            checkpoint_every=max(1, round(r.checkpoint_every * scale)))

    def resolved(self) -> "DistillConfig":
        """This config with every empty knob taken from the preset."""
        base = PRESETS[self.preset]
        return dataclasses.replace(self, **{k: v for k, v in base.items() if getattr(self, k) is None})

    @property
    def n_views(self) -> int:
        r = self.resolved()
        return int(r.n_az) * int(r.n_el)

    def estimated_seconds(self, device: str = "cuda") -> float:
        """Wall-time estimate of a whole head ("cpu" or "cuda"): the schedule's units times ``COSTS[device]``
        (see :func:`estimate_source` for whether those are measured or calculated)."""
        r = self.resolved()
        c = COSTS[_kind(device)]
        # training: every step marches batch x patch^2 rays (patches are capped at the phase's resolution)
        bounds = [0, *[min(int(m), int(r.steps)) for m in r.milestones], int(r.steps)]
        rays = sum((hi - lo) * r.batch_views * min(r.patch, res) ** 2
                   for lo, hi, res in zip(bounds, bounds[1:], r.resolutions))
        train = rays * r.samples_per_ray * OCCUPIED / 1e6 * float(c["train_msample_s"])
        # targets: the schedule's updates (Stage 1: one step each; Stage 2: one run of the remaining levels)
        n1 = round(r.levels * r.stage1_fraction)
        updates = [(i * r.update_every, 1) for i in range(n1)] + ([(n1 * r.update_every, r.levels - n1)]
                                                                   if r.levels > n1 else [])
        updates = [(step, n) for step, n in updates if step < r.steps]
        render_rays = sum(self.n_views * _resolution_at(r, step) ** 2 for step, _ in updates)
        renders = render_rays * r.samples_per_ray * OCCUPIED / 1e6 * float(c["render_msample_s"])
        prior = sum(self.n_views * (float(c["target_view_s"]) + (n - 1) * float(c["ddim_view_s"]))
                    for _, n in updates)
        return float(train + renders + prior)


def estimate_source(device: str = "cuda") -> str:
    """"measured" or "calculated": where the per-unit costs behind ``estimated_seconds(device)`` come from."""
    return str(COSTS[_kind(device)]["source"])


def _kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def _resolution_at(r: DistillConfig, step: int) -> int:
    """The render resolution of ``step`` (as ``backend.distill.schedule.Schedule.resolution_at``)."""
    return int(r.resolutions[bisect.bisect_right(r.milestones, step)])


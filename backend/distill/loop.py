"""The progressive distillation loop (Joker §3.3; docs/REFERENCE.md §4), one function in numbered stages.

    1. set up: resolve the config, build the schedule, field, occupancy grid, AdamW and the target store
    2. resume from the job's checkpoint, if any
    3. for every step:
       3.1 render resolution of this step (set before any target rendering, as the reference does)
       3.2 refresh the occupancy grid every 16 steps
       3.3 target update when the schedule says so: render every view with the current field, noise to level t,
           denoise with the prior (1 step in Stage 1, one multi-step DDIM run in Stage 2), store
           (the "dynamic" baseline instead draws a random level every step for the batch's views)
       3.4 one optimisation step on a random patch shared by a random batch of views
       3.5 progress, cancellation (the callback may raise), checkpoint
    4. return the field and the run's record

Costs (``backend.costs``) are counted where the work happens: NeRF steps and target updates here, rays and samples
in the renderer, prior passes in the guidance's own counter (this run's share is merged into the result's), wall
time per stage ("targets" with its "target_renders" share, "optimisation", "previews").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from backend import costs
from backend.costs import CostCounter
from backend.distill.checkpoint import load_state, load_targets, save_state, save_targets
from backend.distill.losses import distill_loss, resize_targets
from backend.distill.lpips import LPIPS
from backend.distill.schedule import Schedule, TargetUpdate
from backend.field import HeadNeRF
from backend.guidance import Guidance
from backend.render.volume import OccupancyGrid, RayBundle, patch_rays, render_image, render_rays, step_size
from shared.config import DistillConfig
from shared.conventions import Camera
from shared.spec import to_dict

OCCUPANCY_EVERY = 16  # nerfacc's update interval
ADAMW = dict(betas=(0.9, 0.99), eps=1e-15, weight_decay=0.01)  # threestudio's optimiser settings


@dataclass
class DistillEvent:
    kind: str  # "step" or "targets" (after a target update, with a preview)
    step: int
    total: int
    stage: int  # 1 or 2 (progressive), 0 for the dynamic baseline
    t: int  # noise level of the targets being fitted
    loss: float
    eta_s: Optional[float]
    preview: Optional[np.ndarray] = None  # uint8 [H, W, 3] frontal render


@dataclass
class DistillResult:
    field: HeadNeRF
    occupancy: OccupancyGrid
    steps: int
    seconds: float
    losses: list[float] = dc_field(default_factory=list)
    resumed_from: int = 0
    costs: CostCounter = dc_field(default_factory=CostCounter)  # this run's counts and stage times


def distill(guidance: Guidance, cameras: Sequence[Camera], cfg: DistillConfig, *, device: str = "cpu",
            lpips: Optional[LPIPS] = None, seed: int = 0, workdir: Optional[Path] = None, resume: bool = False,
            callback: Optional[Callable[[DistillEvent], None]] = None, implementation: str = "auto",
            max_steps: Optional[int] = None, counter: Optional[CostCounter] = None) -> DistillResult:
    """Distil ``guidance`` into a new ``HeadNeRF`` seen from ``cameras`` (the job's views, any resolution).

    ``workdir``: where checkpoints go (none without it); ``resume``: continue from the checkpoint there.
    ``max_steps``: stop early after this many steps (tests; a checkpoint is still written).
    ``counter``: where this run's costs are added (a new one by default); also returned as ``result.costs``.
    """
    # 1. Set up ----------------------------------------------------------------------------------------------------
    r = cfg.resolved()
    schedule = Schedule(r)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the caller's RNG alone
        torch.manual_seed(seed)
        field = HeadNeRF.from_config(r, implementation).to(device)
    occupancy = OccupancyGrid(field.radius, r.occupancy_res).to(device)
    optimizer = torch.optim.AdamW(field.param_groups(r.lr_grid, r.lr_mlp), **ADAMW)
    delta = step_size(field.radius, r.samples_per_ray)
    V, R = len(cameras), guidance.resolution
    targets = torch.zeros(V, 3, R, R, dtype=torch.uint8, device=device)  # 8-bit, as checkpointed
    current: Optional[TargetUpdate] = None
    lpips = lpips.to(device) if (lpips is not None and r.lpips_weight > 0) else None
    front = min(range(V), key=lambda i: abs(cameras[i].c2w[0, 3]) + abs(cameras[i].c2w[1, 3]))
    counter = counter if counter is not None else CostCounter()
    prior_counter: Optional[CostCounter] = getattr(guidance, "counter", None)
    prior_before = prior_counter.snapshot() if prior_counter is not None else {}

    # 2. Resume ----------------------------------------------------------------------------------------------------
    start = 0
    state = load_state(workdir) if (workdir is not None and resume) else None
    if state is not None:
        field.load_state_dict(state["field"])
        occupancy.load_state_dict(state["occupancy"])
        optimizer.load_state_dict(state["optimizer"])
        g.set_state(state["rng"])
        start = int(state["step"])
        stored = load_targets(workdir)
        expected = schedule.last_update_before(start - 1) if r.targets == "progressive" else None
        if stored is not None and expected is not None and stored[0] == expected.index:
            targets.copy_(stored[1])
            current = expected
        elif expected is not None:  # the targets file is missing or newer: remake the expected targets now
            with counter.timed("targets", device):
                _update_targets(field, guidance, cameras, targets, expected, schedule.resolution_at(start), r,
                                occupancy, g, device, counter)
            current = expected

    # 3. Optimise --------------------------------------------------------------------------------------------------
    end = min(r.steps, start + max_steps) if max_steps is not None else r.steps
    t0, losses = time.monotonic(), []
    for step in range(start, end):
        # 3.1 resolution of this step
        res = schedule.resolution_at(step)

        # 3.2 empty-space skipping
        if step % OCCUPANCY_EVERY == 0:
            with counter.timed("optimisation", device):
                occupancy.update(lambda p: field(p, with_colour=False)[0], delta, g)

        # 3.3 targets
        update = schedule.update_at(step) if r.targets == "progressive" else None
        if update is not None:
            with counter.timed("targets", device):
                _update_targets(field, guidance, cameras, targets, update, res, r, occupancy, g, device, counter)
                if workdir is not None:
                    save_targets(workdir, update.index, targets)
            current = update
            if callback:
                with torch.no_grad(), counter.timed("previews", device):
                    preview = render_image(field, cameras[front].scaled(res), r.samples_per_ray, occupancy)["rgb"]
                callback(DistillEvent("targets", step, r.steps, update.stage, update.t,
                                      losses[-1] if losses else float("nan"), _eta(t0, step - start, end - step),
                                      _to_uint8(preview)))
        views = torch.randperm(V, generator=g)[: min(r.batch_views, V)]
        if r.targets == "dynamic":
            t_dyn = schedule.timesteps[int(torch.randint(len(schedule.timesteps), (1,), generator=g))]
            with counter.timed("targets", device):
                batch_targets = _dynamic_targets(field, guidance, cameras, views, t_dyn, res, r, occupancy, g,
                                                 device, counter)
        else:
            batch_targets = targets[views.to(device)].float() / 255.0

        # 3.4 one optimisation step on a random patch
        with counter.timed("optimisation", device):
            p = min(r.patch, res)
            x0, y0 = (int(v) for v in torch.randint(0, max(res - p, 1), (2,), generator=g))
            render, opacity = _render_patch(field, [cameras[int(i)].scaled(res) for i in views], x0, y0, p, r,
                                            occupancy, g, device, counter)
            target = resize_targets(batch_targets, res)[:, :, y0:y0 + p, x0:x0 + p]
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
                loss, parts = distill_loss(render, target, opacity, lpips, r.lpips_weight, r.sparsity_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        counter.add(costs.NERF_STEPS)
        losses.append(parts["loss"])

        # 3.5 progress, cancellation, checkpoint
        stage = 0 if r.targets == "dynamic" else (current.stage if current else 1)
        level = t_dyn if r.targets == "dynamic" else (current.t if current else 999)
        if callback:
            callback(DistillEvent("step", step + 1, r.steps, stage, level, parts["loss"],
                                  _eta(t0, step + 1 - start, end - step - 1)))
        if workdir is not None and ((step + 1) % r.checkpoint_every == 0 or step + 1 == end):
            save_state(workdir, step + 1, field, occupancy, optimizer, g, to_dict(r))

    # 4. Done ------------------------------------------------------------------------------------------------------
    field.eval()
    if prior_counter is not None:
        counter.merge(prior_counter.since(prior_before))
    return DistillResult(field, occupancy, end, time.monotonic() - t0, losses, start, counter)


def _eta(t0: float, done: int, remaining: int) -> Optional[float]:
    return (time.monotonic() - t0) / done * remaining if done > 0 else None


def _to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """float [3, H, W] in 0..1 -> uint8 [H, W, 3]."""
    return (rgb.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def _render_views(field, guidance: Guidance, cameras: Sequence[Camera], views: Sequence[int], res: int, r: DistillConfig,
                  occupancy: OccupancyGrid, g: torch.Generator, device: str, counter: CostCounter) -> torch.Tensor:
    """Full renders of ``views`` at ``res`` in train mode (stratified, as the reference): float [B, 3, res, res].
    A guidance that declares ``uses_images = False`` (the unperturbed oracle) gets zeros instead."""
    counter.add(costs.TARGET_VIEWS, len(views))
    if not getattr(guidance, "uses_images", True):
        return torch.zeros(len(views), 3, res, res, device=device)
    out, renders = [], CostCounter()
    with torch.no_grad(), counter.timed("target_renders", device):
        for i in views:
            rays = patch_rays(cameras[int(i)].scaled(res), 0, 0, res, device)
            rgb = render_rays(field, rays, r.samples_per_ray, occupancy, stratified=True, generator=g,
                              counter=renders)["rgb"]
            out.append(rgb.T.reshape(3, res, res))
    counter.merge(renders.counts)  # in the totals, and on their own: renders cost less per sample than training
    counter.merge({"target_" + k: v for k, v in renders.counts.items()})
    return torch.stack(out)


def _update_targets(field, guidance: Guidance, cameras: Sequence[Camera], targets: torch.Tensor,
                    update: TargetUpdate, res: int, r: DistillConfig, occupancy: OccupancyGrid,
                    g: torch.Generator, device: str, counter: CostCounter, batch: int = 8) -> None:
    """Refresh every view's target (in place, uint8): render -> prior at level ``update.t`` for ``n_steps``."""
    counter.add(costs.TARGET_UPDATES)
    for lo in range(0, len(cameras), batch):
        views = torch.arange(lo, min(lo + batch, len(cameras)))
        images = _render_views(field, guidance, cameras, views.tolist(), res, r, occupancy, g, device, counter)
        with torch.no_grad():
            out = guidance.targets(images, views, update.t, update.n_steps, generator=g)
        targets[lo:lo + len(views)] = (out.clamp(0, 1) * 255.0).round().to(torch.uint8).to(targets.device)


def _dynamic_targets(field, guidance: Guidance, cameras: Sequence[Camera], views: torch.Tensor, t: int, res: int,
                     r: DistillConfig, occupancy: OccupancyGrid, g: torch.Generator, device: str,
                     counter: CostCounter) -> torch.Tensor:
    """The SDS-style baseline: fresh one-step targets for this batch at a random level ``t``."""
    counter.add(costs.TARGET_UPDATES)
    images = _render_views(field, guidance, cameras, views.tolist(), res, r, occupancy, g, device, counter)
    with torch.no_grad():
        return guidance.targets(images, views, t, 1, generator=g).float().to(device)


def _render_patch(field, cams: Sequence[Camera], x0: int, y0: int, p: int, r: DistillConfig,
                  occupancy: OccupancyGrid, g: torch.Generator, device: str,
                  counter: CostCounter) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable renders of the patch in every camera: (rgb float [B, 3, p, p], opacity float [B * p * p])."""
    bundles = [patch_rays(c, x0, y0, p, device) for c in cams]
    rays = RayBundle(torch.cat([b.origins for b in bundles]), torch.cat([b.dirs for b in bundles]))
    out = render_rays(field, rays, r.samples_per_ray, occupancy, stratified=True, generator=g, chunk=1 << 30,
                      counter=counter)
    rgb = out["rgb"].view(len(cams), p, p, 3).permute(0, 3, 1, 2)
    return rgb, out["opacity"]

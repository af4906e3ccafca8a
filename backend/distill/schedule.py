"""The progressive target schedule (docs/REFERENCE.md §4 "Noise levels", "When targets are updated", "Resolution").

Levels: t_i = round(linspace(999, 0, levels + 1)[:levels]), i.e. 999, 989, ..., 10 for 100 levels.
Stage 1: the first n1 = round(levels * stage1_fraction) levels, one target update each at steps 0, E, 2E, ...
(E = update_every), each a one-step DDIM from t_i to 0. Stage 2: one update at step n1 * E from t_{n1}, a DDIM run of
levels - n1 steps (t_{n1}, ..., t_{levels-1}, then 0); the remaining steps fit these frozen targets.
The reference: 60 updates at steps 0..7670 (t = 999..410), then 40 steps from t = 400 at step 7800.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Optional

import numpy as np

from shared.config import DistillConfig


@dataclass(frozen=True)
class TargetUpdate:
    step: int  # the optimisation step before which targets are refreshed
    t: int  # noise level the renders are noised to
    n_steps: int  # DDIM steps from t down to 0
    stage: int  # 1 or 2
    index: int  # 0-based count of this update


def denoising_timesteps(levels: int) -> list[int]:
    """The fixed DDIM levels, highest first: round(linspace(999, 0, levels + 1)[:levels])."""
    return [int(t) for t in np.round(np.linspace(999, 0, levels + 1)[:levels])]


class Schedule:
    """Which targets to make on which step, and the render resolution of each step, for a resolved config."""

    def __init__(self, cfg: DistillConfig):
        r = cfg.resolved()
        self.steps, self.every = int(r.steps), int(r.update_every)
        self.resolutions, self.milestones = tuple(r.resolutions), tuple(r.milestones)
        self.timesteps = denoising_timesteps(int(r.levels))
        self.n_stage1 = int(round(r.levels * r.stage1_fraction))
        self.updates = self._plan()

    def _plan(self) -> list[TargetUpdate]:
        plan = [TargetUpdate(i * self.every, t, 1, 1, i) for i, t in enumerate(self.timesteps[:self.n_stage1])]
        n_stage2 = len(self.timesteps) - self.n_stage1
        if n_stage2 > 0:
            plan.append(TargetUpdate(self.n_stage1 * self.every, self.timesteps[self.n_stage1], n_stage2, 2,
                                     len(plan)))
        return [u for u in plan if u.step < self.steps]

    def update_at(self, step: int) -> Optional[TargetUpdate]:
        """The target update to run before ``step``, if any."""
        i = bisect.bisect_left([u.step for u in self.updates], step)
        return self.updates[i] if i < len(self.updates) and self.updates[i].step == step else None

    def last_update_before(self, step: int) -> Optional[TargetUpdate]:
        """The latest update at or before ``step`` (what the targets hold while training ``step``)."""
        done = [u for u in self.updates if u.step <= step]
        return done[-1] if done else None

    def resolution_at(self, step: int) -> int:
        """Render resolution of ``step``: bisect on the milestones (the reference bisects [-1, 200, 3000, ...])."""
        return self.resolutions[bisect.bisect_right(self.milestones, step)]

    def planned_prior_evals(self, n_views: int) -> dict[str, int]:
        """Prior evaluations (one view at one DDIM step, all CFG branches) the plan asks for with ``n_views``
        views: {"stage1": ..., "stage2": ..., "total": ...}. The paper's: 60 x 400 + 40 x 400 = 40,000."""
        stage1 = sum(n_views * u.n_steps for u in self.updates if u.stage == 1)
        stage2 = sum(n_views * u.n_steps for u in self.updates if u.stage == 2)
        return {"stage1": stage1, "stage2": stage2, "total": stage1 + stage2}

    def stage_at(self, step: int) -> int:
        u = self.last_update_before(step)
        return u.stage if u is not None else 1


def whole_head_seconds(cfg: DistillConfig, u: dict[str, float]) -> float:
    """A whole head's seconds from measured unit costs ``u`` (bench/gpu_check.py measures them; keys step_s,
    render_ray_s, target_view_s, ddim_view_s): steps x s/step + for every planned update: its views' renders at
    that step's resolution, one-step targets, and (Stage 2) the further DDIM steps."""
    r, plan = cfg.resolved(), Schedule(cfg)
    views = cfg.n_views
    prior = sum(views * (plan.resolution_at(up.step) ** 2 * u["render_ray_s"] + u["target_view_s"]
                         + (up.n_steps - 1) * u["ddim_view_s"]) for up in plan.updates)
    return r.steps * u["step_s"] + prior

"""Cost counters (backend.costs) counted where the work happens: the prior's passes per sample and VAE images on the
tiny random prior, the loop's steps, target updates, rays and samples on the oracle; the turbo preset's budget
counted by running its schedule; the estimates and their source label."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend import costs
from backend.distill import Schedule, distill
from backend.distill.oracle import OracleGuidance, oracle_head
from backend.prior import load_prior
from backend.prior.guidance import PriorGuidance
from testkit.tiny_prior import TINY_RESOLUTION, ensure_tiny_models
from shared.config import DistillConfig, PriorConfig
from shared.config.distill import estimate_source
from shared.conventions import reference_grid

SMALL = dict(preset="draft", n_az=3, n_el=2, levels=6, update_every=4, steps=30, batch_views=3, patch=8,
             resolutions=(16, 24), milestones=(10,), samples_per_ray=24, grid_levels=4, grid_log2_table=10,
             grid_per_level_scale=1.6, checkpoint_every=100)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def head(ict_npz):
    from shared.morphable import MorphableModel

    return oracle_head(MorphableModel.load(ict_npz), expressions={"mouthSmile_L": 0.5})


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    models = ensure_tiny_models(tmp_path_factory.getbasetemp() / "prior-models")
    return load_prior(PriorConfig(mode="joker"), models, "cpu")


def _guidance(prior, views: int, max_batch: int) -> PriorGuidance:
    maps = np.random.default_rng(0).integers(0, 255, (views, TINY_RESOLUTION, TINY_RESOLUTION, 3), dtype=np.uint8)
    reference = torch.rand(1, 3, TINY_RESOLUTION, TINY_RESOLUTION, generator=torch.Generator().manual_seed(1))
    return PriorGuidance(prior, maps, reference, "a man", cfg=7.0, max_batch=max_batch)


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("n_steps", [1, 3])
def test_prior_counts_every_pass_per_sample(prior, cache, n_steps):
    """B views through CFG (2 rows each) for n DDIM steps in batches of 2: the UNet and ControlNet see 2·B·n rows;
    the reference UNet, when cached, 2 rows per level and batch run (Stage 1: one level shared by every batch;
    Stage 2: each batch walks all n levels and the cache holds one level), 2 per view row per step when not."""
    prior.reference_cache = cache
    guidance = _guidance(prior, views=5, max_batch=2)
    before = prior.counter.snapshot()
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    guidance.targets(images, torch.arange(5), 500, n_steps, generator=torch.Generator().manual_seed(3))
    got = prior.counter.since(before)
    B, n = 5, n_steps
    assert got[costs.UNET] == 2 * B * n and got[costs.CONTROLNET] == 2 * B * n
    assert got[costs.PRIOR_EVALS] == B * n
    assert got[costs.VAE_ENCODES] == B and got[costs.VAE_DECODES] == B
    batches = 3  # ceil(5 / 2)
    assert got[costs.REF_UNET] == ((2 if n == 1 else 2 * n * batches) if cache else 2 * B * n)
    prior.reference_cache = True


def test_distillation_counts_steps_updates_rays_and_the_prior(head):
    """Every count of a short run against what its schedule and batch shapes imply."""
    cfg = DistillConfig(**SMALL)
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el)
    guidance = OracleGuidance(head, cams, 24, perturb=0.5)  # input-dependent: the loop renders every view
    schedule = Schedule(cfg)
    result = distill(guidance, cams, cfg, seed=0, implementation="torch")
    c = result.costs.counts
    V = len(cams)
    assert c[costs.NERF_STEPS] == r.steps == 30
    assert c[costs.TARGET_UPDATES] == len(schedule.updates) == 5  # 4 one-step levels + one 2-step Stage-2 run
    assert c[costs.TARGET_VIEWS] == V * len(schedule.updates)
    assert c[costs.PRIOR_EVALS] == schedule.planned_prior_evals(V)["total"] == V * 6
    train_rays = sum(r.batch_views * min(r.patch, schedule.resolution_at(k)) ** 2 for k in range(r.steps))
    target_rays = sum(V * schedule.resolution_at(u.step) ** 2 for u in schedule.updates)
    assert c[costs.RAYS] == train_rays + target_rays and c[costs.TARGET_RAYS] == target_rays
    assert 0 < c[costs.TARGET_RAY_SAMPLES] < c[costs.RAY_SAMPLES]
    assert 0 < c[costs.SHADED_SAMPLES] <= c[costs.RAY_SAMPLES] <= c[costs.RAYS] * r.samples_per_ray
    s = result.costs.seconds
    assert s["targets"] > 0 and s["optimisation"] > 0 and 0 < s["target_renders"] <= s["targets"]
    # a second run on the same guidance reports its own share only
    again = distill(guidance, cams, DistillConfig(**{**SMALL, "steps": 5}), seed=0, implementation="torch")
    assert again.costs.counts[costs.PRIOR_EVALS] == V * 2  # updates at steps 0 and 4


def test_paper_and_turbo_prior_budgets():
    paper = DistillConfig(preset="paper")
    assert Schedule(paper).planned_prior_evals(paper.n_views) == {"stage1": 24_000, "stage2": 16_000, "total": 40_000}
    turbo = DistillConfig(preset="turbo")
    turbo.validate()
    r = turbo.resolved()
    plan = Schedule(turbo)
    assert plan.planned_prior_evals(turbo.n_views)["total"] <= 40_000 / 20
    assert 256 <= r.resolutions[-1] <= 384 and r.stage1_fraction == 0.6
    stage2 = [u for u in plan.updates if u.stage == 2]
    assert len(stage2) == 1 and 0.35 <= stage2[0].step / r.steps <= 0.45  # Stage 2 at ~40% of the steps, as paper


def test_turbo_schedule_counted_by_running_it(head):
    """The whole turbo target schedule run (compressed into few, cheap steps): the counted prior evaluations are the
    planned 1,920, at most 1/20 of the paper's 40,000."""
    cfg = DistillConfig(preset="turbo", batch_views=1, patch=8, samples_per_ray=16, grid_levels=4,
                        grid_log2_table=10, lpips_weight=0.0).with_steps(50)
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el)
    result = distill(OracleGuidance(head, cams, 32), cams, cfg, seed=0, implementation="torch")
    counted = result.costs.counts[costs.PRIOR_EVALS]
    assert counted == Schedule(cfg).planned_prior_evals(len(cams))["total"] == 120 * (10 + 6)
    assert counted * 20 <= 40_000 and result.costs.counts[costs.TARGET_UPDATES] == 11


def test_estimates_rank_the_presets_and_say_they_are_calculated():
    seconds = {p: DistillConfig(preset=p).estimated_seconds("cuda") for p in ("turbo", "fast", "paper")}
    assert seconds["turbo"] < seconds["fast"] < seconds["paper"]
    # a step cap cuts the estimate (the add-on's max-steps field)
    assert DistillConfig(preset="paper").with_steps(2000).estimated_seconds("cuda") < seconds["paper"]
    assert estimate_source("cuda") in ("calculated", "measured") and estimate_source("cpu") == "measured"


def test_addon_labels_calculated_estimates(monkeypatch):
    """quality.py as the add-on runs it (over its vendored ``shared``; here the repo's, without bpy)."""
    import importlib.util
    import types
    from pathlib import Path

    import shared
    import shared.config.distill

    pkg = types.ModuleType("addon_under_test")
    pkg.__path__ = []
    for name, module in {"": pkg, ".shared": shared, ".shared.config": shared.config,
                         ".shared.config.distill": shared.config.distill}.items():
        monkeypatch.setitem(__import__("sys").modules, "addon_under_test" + name, module)
    spec = importlib.util.spec_from_file_location(
        "addon_under_test.quality", Path(__file__).resolve().parents[1] / "blender_addon" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    text = quality.estimate("turbo")
    assert text.startswith("about ")
    assert text.endswith(", calculated") == (estimate_source("cuda") == "calculated")
    assert "turbo" in quality.preset_names()

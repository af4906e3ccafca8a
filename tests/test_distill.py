"""Progressive distillation: the schedule's layout, the config's presets, LPIPS loading, the oracle prior, and a tiny
CPU distillation of the oracle head (loss falls, held-out PSNR passes), checkpoint/resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.distill import Schedule, denoising_timesteps, distill
from backend.distill.losses import distill_loss, resize_targets, sparsity
from backend.distill.lpips import LPIPS, WEIGHTS_NAME, find_lpips_weights
from backend.distill.metrics import psnr
from backend.distill.oracle import OracleGuidance, oracle_head, render_oracle
from backend.render.volume import render_image
from shared.config import DistillConfig
from shared.conventions import orbit_camera, reference_grid
from shared.spec import SpecError, from_dict
from tests.support import assert_close

# A tiny schedule: 12 views at 32 px, 10 levels (6 one-step, then a 4-step run), a small grid.
TINY = dict(preset="draft", n_az=4, n_el=3, levels=10, update_every=8, steps=160, batch_views=4, patch=16,
            resolutions=(24, 32), milestones=(20,), samples_per_ray=48, grid_levels=6, grid_log2_table=12,
            grid_per_level_scale=1.6, lr_mlp=1e-2, checkpoint_every=10)
HELD_OUT = [(-30.0, 8.0), (15.0, -12.0), (33.0, 14.0)]  # between the grid's views


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def head(ict_npz):
    from shared.morphable import MorphableModel

    return oracle_head(MorphableModel.load(ict_npz), expressions={"mouthSmile_L": 0.5})


# --- schedule -------------------------------------------------------------------------------------------------------
def test_reference_levels():
    t = denoising_timesteps(100)
    assert t[:3] == [999, 989, 979] and t[58:62] == [420, 410, 400, 390] and t[-1] == 10 and len(t) == 100


def test_paper_schedule_layout():
    s = Schedule(DistillConfig(preset="paper"))
    stage1 = [u for u in s.updates if u.stage == 1]
    stage2 = [u for u in s.updates if u.stage == 2]
    assert len(stage1) == 60 and len(stage2) == 1
    assert [u.step for u in stage1] == list(range(0, 7800, 130))
    assert stage1[0].t == 999 and stage1[-1].t == 410 and all(u.n_steps == 1 for u in stage1)
    assert (stage2[0].step, stage2[0].t, stage2[0].n_steps) == (7800, 400, 40)
    assert s.update_at(130).t == 989 and s.update_at(131) is None and s.update_at(7930) is None
    assert s.stage_at(7799) == 1 and s.stage_at(7800) == 2 and s.stage_at(19999) == 2
    assert [s.resolution_at(k) for k in (0, 199, 200, 2999, 3000, 4499, 4500, 6999, 7000, 19999)] == \
        [64, 64, 128, 128, 256, 256, 384, 384, 512, 512]


def test_stage_ratio_and_levels_are_config_fields():
    s = Schedule(DistillConfig(preset="paper", levels=20, stage1_fraction=0.5, update_every=10))
    assert [u.stage for u in s.updates] == [1] * 10 + [2]
    assert s.updates[-1].step == 100 and s.updates[-1].n_steps == 10 and s.updates[-1].t == s.timesteps[10]
    only1 = Schedule(DistillConfig(preset="paper", levels=20, stage1_fraction=1.0))
    assert {u.stage for u in only1.updates} == {1} and len(only1.updates) == 20


def test_presets_resolve_and_validate():
    paper = DistillConfig().resolved()
    assert (paper.n_az * paper.n_el, paper.levels, paper.update_every, paper.steps, paper.lr_grid) == \
        (400, 100, 130, 20000, 1e-2)
    draft = from_dict(DistillConfig, {"preset": "draft", "steps": 900})
    assert draft.resolved().steps == 900 and draft.resolved().levels == 20  # override + preset value
    with pytest.raises(SpecError, match="milestones"):
        from_dict(DistillConfig, {"preset": "paper", "milestones": [10, 20]})
    est = {p: DistillConfig(preset=p).estimated_seconds("cuda") for p in ("paper", "fast", "draft")}
    assert est["paper"] > est["fast"] > est["draft"] > 0
    assert DistillConfig(preset="draft").estimated_seconds("cpu") < 600


# --- losses ---------------------------------------------------------------------------------------------------------
def test_lpips_loads_from_safetensors_and_measures(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tiny = LPIPS(widths=(4, 8, 8, 16, 16))
    for lin in tiny.lins:
        lin.weight.data.abs_()  # LPIPS heads are non-negative
    (tmp_path / WEIGHTS_NAME).parent.mkdir(parents=True)
    save_file(tiny.state_for_file(), str(tmp_path / WEIGHTS_NAME))
    assert find_lpips_weights(tmp_path) == tmp_path / WEIGHTS_NAME and find_lpips_weights(tmp_path / "x") is None
    net = LPIPS.from_file(find_lpips_weights(tmp_path))
    assert net.widths == (4, 8, 8, 16, 16)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-6)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    d = net(x, y)
    assert bool((d > 0).all()) and torch.allclose(d, tiny(x, y), atol=1e-6)
    loss, parts = distill_loss(y, x, torch.rand(2 * 32 * 32), net, 1.0, 1e-6)
    loss.backward()
    assert y.grad is not None and parts["lpips"] > 0 and parts["loss"] > parts["l1"]


def test_loss_parts():
    x = torch.rand(1, 3, 8, 8)
    loss, parts = distill_loss(x, x, torch.zeros(64), None, 1.0, 1.0)
    assert parts["l1"] == 0 and "lpips" not in parts and loss.item() == pytest.approx(0.1)  # sqrt(0 + 0.01)
    assert sparsity(torch.ones(4)).item() == pytest.approx(np.sqrt(1.01))
    big = torch.rand(2, 3, 64, 64)
    assert torch.allclose(resize_targets(big, 32), torch.nn.functional.avg_pool2d(big, 2), atol=1e-6)


# --- oracle ---------------------------------------------------------------------------------------------------------
def test_oracle_renders_the_head_and_perturbs_with_the_level(head):
    cams = reference_grid(32, 2, 2)
    img = render_oracle(head, cams[0])
    assert img.shape == (3, 32, 32) and 0 <= img.min() and img.max() <= 1
    clean = OracleGuidance(head, cams, 32)
    views = torch.arange(4)
    same = clean.targets(torch.zeros(4, 3, 16, 16), views, 999, 1)
    assert torch.equal(same, clean.truth) and not clean.uses_images
    noisy = OracleGuidance(head, cams, 32, perturb=1.0, seed=3)
    renders = clean.truth.clone()
    err = {t: (noisy.targets(renders, views, t, 1) - clean.truth).abs().mean().item() for t in (999, 600, 200)}
    assert err[999] > err[600] > err[200]  # view-inconsistent perturbations grow with the noise level
    a, b = noisy.targets(renders, views, 999, 1), noisy.targets(renders, views, 999, 1)
    assert (a - b).abs().mean() > 0.01  # fresh perturbations per call


# --- the loop -------------------------------------------------------------------------------------------------------
def _held_out_psnr(result, head, samples: int) -> float:
    cams = [orbit_camera(a, e, 32) for a, e in HELD_OUT]
    truth = torch.from_numpy(np.stack([render_oracle(head, c) for c in cams]))
    with torch.no_grad():
        pred = torch.stack([render_image(result.field, c, samples, result.occupancy)["rgb"] for c in cams])
    return psnr(pred, truth)


@pytest.mark.slow
def test_tiny_distillation_fits_the_oracle_head(head):
    cfg = DistillConfig(**TINY)
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el)
    events = []
    result = distill(OracleGuidance(head, cams, 32), cams, cfg, seed=0, callback=events.append,
                     implementation="torch")
    first, last = np.mean(result.losses[:10]), np.mean(result.losses[-10:])
    assert last < 0.6 * first
    score = _held_out_psnr(result, head, r.samples_per_ray)
    assert score > 18.0, f"held-out PSNR {score:.1f} dB"
    updates = [e for e in events if e.kind == "targets"]
    assert [e.step for e in updates] == [0, 8, 16, 24, 32, 40, 48] and updates[-1].stage == 2
    assert updates[0].preview.shape == (24, 24, 3) and updates[-1].preview.shape == (32, 32, 3)


@pytest.mark.slow
def test_resume_continues_exactly(head, tmp_path):
    cfg = DistillConfig(**{**TINY, "steps": 30})
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el)
    guidance = OracleGuidance(head, cams, 32, perturb=0.5)  # input-dependent: the renders matter
    whole = distill(guidance, cams, cfg, seed=1, implementation="torch")
    part = distill(guidance, cams, cfg, seed=1, workdir=tmp_path, max_steps=13, implementation="torch")
    assert part.steps == 13 and (tmp_path / "distill_state.pt").is_file()
    rest = distill(guidance, cams, cfg, seed=1, workdir=tmp_path, resume=True, implementation="torch")
    assert rest.resumed_from == 13 and rest.steps == 30 and len(rest.losses) == 17
    for (name, a), b in zip(whole.field.state_dict().items(), rest.field.state_dict().values()):
        assert_close(a, b, name=name)
    assert rest.losses[-1] == pytest.approx(whole.losses[-1], rel=1e-4)


def test_dynamic_baseline_draws_a_level_every_step(head):
    cfg = DistillConfig(**{**TINY, "steps": 8, "targets": "dynamic"})
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el)
    events = []
    distill(OracleGuidance(head, cams, 32, perturb=1.0), cams, cfg, seed=2, callback=events.append,
            implementation="torch")
    assert [e.kind for e in events] == ["step"] * 8  # no scheduled target updates
    assert {e.stage for e in events} == {0} and len({e.t for e in events}) > 2


def test_a_step_cap_compresses_the_schedule_and_keeps_stage_2():
    from backend.distill.schedule import Schedule

    cfg = DistillConfig(preset="paper").with_steps(2000)
    plan = Schedule(cfg).updates
    assert cfg.steps == 2000 and [u.stage for u in plan].count(2) == 1 and len(plan) == 61
    assert plan[-1].step < 2000 * 0.4 + 13  # Stage 2 starts where the reference's does, scaled (7800 / 20000)
    assert list(cfg.resolved().milestones) == [20, 300, 450, 700]

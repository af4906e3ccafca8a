"""The ``generate`` runner with the oracle prior: progress (stage, level, step, loss, ETA, previews), the result
(renders, GLB), cancellation, resume from the job's checkpoint; `joker-head demo` without weights."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.jobs import default_runners
from backend.jobs.generate import GenerateRunner
from backend.runner import JobCancelled, JobContext
from shared.config import DistillConfig, ExportConfig, PriorConfig
from shared.jobs import GenerateParams, RigState

REPO = Path(__file__).resolve().parents[1]
TINY = dict(preset="draft", n_az=3, n_el=2, levels=6, update_every=5, steps=40, batch_views=3, patch=16,
            resolutions=(32,), milestones=(), samples_per_ray=48, grid_levels=6, grid_log2_table=12,
            grid_per_level_scale=1.6, checkpoint_every=10)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def rig(ict_npz):
    from shared.morphable import MorphableModel

    return MorphableModel.load(ict_npz)


def _params(**distill) -> GenerateParams:
    return GenerateParams(prompt="a man", rig=RigState(model="ict", expressions={"jawOpen": 0.3}),
                          prior=PriorConfig(mode="oracle"), distill=DistillConfig(**{**TINY, **distill}),
                          export=ExportConfig(faces=1000, texture=256, resolution=48, uv_patches=4))


def _inputs(rig) -> dict:
    return {"vertices": rig.evaluate(expressions={"jawOpen": 0.3}), "faces": rig.normal_region_faces}


def test_generate_is_a_default_runner():
    assert default_runners()["generate"].kind.name == "generate"


@pytest.mark.slow
def test_generate_with_the_oracle_reports_progress_and_returns_renders_and_glb(rig, tmp_path, monkeypatch):
    monkeypatch.setenv("JOKER_SHARED_DATA", str(REPO.parent / "shared"))
    events = []
    ctx = JobContext("j1", tmp_path, emit=events.append)
    result = GenerateRunner(models_dir=tmp_path / "no-models").run(_params(), _inputs(rig), ctx)
    stages = {e.stage for e in events}
    assert {"prior", "distill", "export"} <= stages
    distill_events = [e for e in events if e.stage == "distill" and "loss" in e.metrics]
    assert distill_events[-1].step == 40 and distill_events[-1].total == 40
    assert {"level", "distill_stage", "loss"} <= set(distill_events[-1].metrics) and distill_events[-1].eta_s is not None
    previews = [e for e in events if e.preview is not None]
    assert len(previews) == 5 and previews[0].preview.shape == (32, 32, 3)  # 3 one-step levels + 1 DDIM run
    names = [a.name for a in result.artifacts]
    assert names == ["head.glb", "renders.png", "visibility.png"]  # visibility: the export's completion map
    assert result.artifacts[0].data[:4] == b"glTF"
    # The distilled field exports a non-empty, closed mesh of head size inside the NeRF bound.
    import trimesh

    from shared.conventions import NERF_BOUND_RADIUS_M

    mesh = trimesh.load(io.BytesIO(result.artifacts[0].data), file_type="glb", force="mesh", process=True)
    mesh.merge_vertices(merge_tex=True, merge_norm=True)  # the GLB splits vertices at UV seams
    assert len(mesh.faces) > 100 and mesh.is_watertight
    assert result.meta["export"]["open_edges"] == 0
    assert 0.05 < mesh.extents.max() <= 2 * NERF_BOUND_RADIUS_M and np.abs(mesh.bounds).max() <= NERF_BOUND_RADIUS_M
    from PIL import Image

    sheet = Image.open(io.BytesIO(result.artifacts[1].data))
    assert sheet.size == (5 * 32, 32)
    assert result.meta["steps"] == 40 and result.meta["mode"] == "oracle"
    assert (tmp_path / "distill" / "distill_state.pt").is_file()


@pytest.mark.slow
def test_generate_cancels_and_resumes(rig, tmp_path):
    def emit(e):  # the user presses Cancel once step 20 is reported
        if e.stage == "distill" and e.step >= 20 and "loss" in e.metrics:
            ctx.cancel()

    ctx = JobContext("j2", tmp_path, emit=emit)
    with pytest.raises(JobCancelled):
        GenerateRunner().run(_params(steps=400, checkpoint_every=5), _inputs(rig), ctx)
    state = torch.load(tmp_path / "distill" / "distill_state.pt", weights_only=True)
    stopped = int(state["step"])
    assert 20 <= stopped < 400
    resumed = []
    ctx2 = JobContext("j2", tmp_path, resume=True, emit=resumed.append)
    runner = GenerateRunner()
    runner._export = lambda field, params, ctx, cameras: (None, {"skipped": True}, {})  # export is tested above
    result = runner.run(_params(steps=stopped + 10, checkpoint_every=5), _inputs(rig), ctx2)
    assert result.meta["resumed_from"] == stopped and result.meta["steps"] == stopped + 10
    first = [e.step for e in resumed if e.stage == "distill" and "loss" in e.metrics][0]
    assert first > stopped  # it went on, it did not start over


def test_demo_without_weights_says_what_is_missing(tmp_path):
    from backend.commands.demo_cmd import missing_weights

    lines = missing_weights(tmp_path)
    text = "\n".join(lines)
    assert "bfm_ft_NersembleCelebvtext_230000.bin" in text and "joker-head fetch-models --mode joker" in text
    assert str(tmp_path) in text


@pytest.mark.slow
def test_demo_command_runs_offline(tmp_path):
    """`joker-head demo` end to end is minutes long; here only its start: the missing-weights report, the fallback,
    and that it gets to distilling (the process is stopped there)."""
    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "demo", "--models-dir", str(tmp_path / "m"),
                             "--out", str(tmp_path / "out"), "--threads", "1"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in proc.stdout:
            seen.append(line)
            if "[distill]" in line and "step" in line:
                break
    finally:
        proc.kill()
        proc.wait(10)
    text = "".join(seen)
    assert "missing" in text and "joker-head fetch-models --mode joker" in text and "LPIPS" in text
    assert "oracle prior" in text and "preset draft" in text and "[distill]" in text


@pytest.mark.slow
def test_generate_with_the_joker_prior_on_tiny_weights(rig, tmp_path):
    """The real prior path end to end: normal maps of every view -> PriorGuidance (tiny random weights in the
    official layout, loaded by the real code) -> distillation -> export."""
    from testkit.tiny_prior import ensure_tiny_models
    from shared.png import encode_png
    from shared.protocol import Png

    models = ensure_tiny_models(tmp_path / "models")
    params = _params(levels=4, steps=12, update_every=3)
    params.prior = PriorConfig(mode="joker")
    from skimage import data

    # a real portrait: the reference is framed on the face (reference_framing "aligned", the default)
    inputs = {**_inputs(rig), "reference": Png(encode_png(data.astronaut()))}
    events = []
    result = GenerateRunner(models_dir=models).run(params, inputs, JobContext("j2", tmp_path / "w", emit=events.append))
    stages = [e.stage for e in events]
    assert "normals" in stages and "distill" in stages and "export" in stages
    assert result.meta["mode"] == "joker" and result.artifacts[0].name == "head.glb"
    assert result.artifacts[0].data[:4] == b"glTF"
    # costs, counted by the prior, the renderer and the loop: 6 views x (2 one-step levels + a 2-step Stage 2 run)
    counts, seconds = result.meta["costs"]["counts"], result.meta["costs"]["seconds"]
    assert counts["nerf_steps"] == 12 and counts["prior_evals"] == 6 * 4
    assert counts["unet_samples"] == counts["controlnet_samples"] == 2 * counts["prior_evals"]  # CFG rows
    assert counts["vae_encodes"] == 6 * 3 + 1 and counts["vae_decodes"] == 6 * 3  # + the reference, once
    assert counts["ray_samples"] > 0 and counts["ref_unet_samples"] > 0
    assert set(seconds) >= {"normals", "prior_load", "targets", "optimisation", "export"}
    assert all(v >= 0 for v in seconds.values()) and result.meta["peak_cuda_gib"] is None  # CPU: no CUDA peak

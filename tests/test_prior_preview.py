"""The preview job and the distillation guidance on tiny weights loaded from disk."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from backend.jobs.preview import PreviewRunner
from backend.prior import load_prior
from backend.prior.guidance import PriorGuidance
from backend.prior.prior import out_of_memory_as_job_error
from testkit.tiny_prior import TINY_RESOLUTION
from backend.prior.errors import PriorError
from backend.runner import JobCancelled, JobContext, JobFailed
from shared.config.prior import PriorConfig
from shared.jobs import PreviewParams
from tests.support import mesh_inputs, sphere_normals

R = TINY_RESOLUTION


def _ctx(tmp_path, events):
    return JobContext("job1", tmp_path, "cpu", emit=events.append)


def test_preview_job_returns_png_with_progress_per_step(models, tmp_path):
    events = []
    runner = PreviewRunner(models_dir=models, render_normals=sphere_normals)
    params = PreviewParams(prompt="a man smiling", steps=2, sampler="ddim", seed=5, reference_framing="centre")
    result = runner.run(params, mesh_inputs(), _ctx(tmp_path, events))
    image = np.asarray(Image.open(io.BytesIO(result.artifacts[0].data)))
    assert result.artifacts[0].name == "image.png" and image.shape == (R, R, 3)
    normals = np.asarray(Image.open(io.BytesIO(result.artifacts[1].data)))
    assert normals.shape == (R, R, 3) and normals[0, 0].tolist() == [0, 0, 0]
    assert [(e.stage, e.step) for e in events if e.stage == "denoise"] == [("denoise", 1), ("denoise", 2)]
    assert result.meta["reference"] is True and result.meta["mode"] == "joker"
    assert result.meta["reference_framing"] == "centre"  # noise has no face: the request asked for the centre
    again = runner.run(params, mesh_inputs(), _ctx(tmp_path, []))  # same seed, cached prior: same image
    assert again.artifacts[0].data == result.artifacts[0].data
    assert len(runner.priors) == 1


def test_preview_job_is_cancelled_at_a_step(models, tmp_path):
    runner = PreviewRunner(models_dir=models, render_normals=sphere_normals)
    ctx = JobContext("job2", tmp_path, "cpu", emit=lambda e: ctx.cancel() if e.stage == "denoise" else None)
    with pytest.raises(JobCancelled):
        runner.run(PreviewParams(steps=5), mesh_inputs(False), ctx)


def test_preview_job_reports_missing_weights_and_bad_inputs(models, tmp_path):
    runner = PreviewRunner(models_dir=tmp_path / "empty", render_normals=sphere_normals)
    with pytest.raises(PriorError) as e:  # the prior's own error passes through the job unchanged
        runner.run(PreviewParams(steps=2), mesh_inputs(), _ctx(tmp_path, []))
    assert e.value.code == "missing_weights" and "fetch-models" in e.value.hint
    runner = PreviewRunner(models_dir=models, render_normals=sphere_normals)
    bad = mesh_inputs()
    bad["reference"] = b"not a png"
    with pytest.raises(JobFailed, match="inputs.reference"):
        runner.run(PreviewParams(steps=2), bad, _ctx(tmp_path, []))
    bad = mesh_inputs()
    bad["faces"] = np.array([[0, 1, 7]], np.int32)
    with pytest.raises(JobFailed, match="inputs.faces"):
        runner.run(PreviewParams(steps=2), bad, _ctx(tmp_path, []))
    with pytest.raises(JobFailed, match="oracle"):
        runner.run(PreviewParams(steps=2, prior=PriorConfig(mode="oracle")), mesh_inputs(), _ctx(tmp_path, []))


def test_preview_job_with_the_rig_renderer(models, tmp_path):
    render = pytest.importorskip("backend.render", reason="backend.render (the rig work) is not on this branch yet")
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.1)
    inputs = {"vertices": sphere.vertices.astype(np.float32), "faces": sphere.faces.astype(np.int32)}
    runner = PreviewRunner(models_dir=models)
    result = runner.run(PreviewParams(steps=2, az_deg=20.0), inputs, _ctx(tmp_path, []))
    normals = np.asarray(Image.open(io.BytesIO(result.artifacts[1].data)))
    assert normals[R // 2, R // 2, 2] > 200 and normals[0, 0].tolist() == [0, 0, 0]
    assert render.render_normal_maps is not None


def test_out_of_memory_becomes_a_job_error():
    with pytest.raises(PriorError) as e, out_of_memory_as_job_error():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert e.value.code == "out_of_memory" and "attention_slicing" in e.value.hint


@pytest.fixture(scope="module")
def guidance(models):
    prior = load_prior(PriorConfig(mode="joker"), models, "cpu")
    maps = np.stack([sphere_normals(None, None, [type("C", (), {"width": R})()])[0],
                     np.zeros((R, R, 3), np.uint8), np.full((R, R, 3), 128, np.uint8)])
    return PriorGuidance(prior, maps, torch.rand(1, 3, 48, 48), "a woman with her tongue out", cfg=19.0, max_batch=2)


def test_guidance_targets_are_images_of_the_prior_resolution(guidance):
    renders = torch.rand(2, 3, 16, 16)
    views = torch.tensor([0, 1])
    a = guidance.targets(renders, views, 999, 1, torch.Generator().manual_seed(0))
    b = guidance.targets(renders, views, 999, 1, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, R, R) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)  # a generator makes targets reproducible
    swapped = guidance.targets(renders, torch.tensor([1, 0]), 999, 1, torch.Generator().manual_seed(0))
    assert (swapped[0] - a[0]).abs().max() > 1e-4  # each view gets its own normal map
    stage2 = guidance.targets(renders[:1], torch.tensor([2]), 400, 2, torch.Generator().manual_seed(0))
    assert stage2.shape == (1, 3, R, R)
    with pytest.raises(ValueError, match="views"):
        guidance.targets(renders[:1], torch.tensor([3]), 500, 1)

"""One prior cache per device, shared by the preview and generate jobs (backend.prior.cache.PriorCache), on tiny
weights loaded from disk by the real code; and the generate job's inputs and oracle head read by their one owner."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

from backend.jobs import default_runners
from backend.jobs.generate import GenerateRunner
from backend.jobs.preview import PreviewRunner
from backend.prior import load_prior
from backend.prior.cache import PriorCache
from backend.runner import JobContext, JobFailed
from shared.config import DistillConfig, PriorConfig
from shared.jobs import GenerateParams, PreviewParams, RigState
from shared.png import encode_png
from shared.protocol import Png
from tests.support import mesh_inputs, sphere_normals

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(preset="draft", n_az=3, n_el=2, levels=4, update_every=3, steps=12, batch_views=3, patch=16,
            resolutions=(32,), milestones=(), samples_per_ray=48, grid_levels=6, grid_log2_table=12,
            grid_per_level_scale=1.6, checkpoint_every=10)


def _counting(loads: list):
    def load(config, root, device):
        loads.append(config)
        return load_prior(config, root, device)
    return load


def _live_priors() -> int:
    """Loaded priors alive in this process (type() rather than isinstance: no proxy objects' __class__ runs)."""
    from backend.prior.prior import JokerPrior

    gc.collect()
    return sum(type(o) is JokerPrior for o in gc.get_objects())


def test_default_runners_share_one_cache():
    runners = default_runners()
    assert runners["preview"].priors is runners["generate"].priors
    assert runners["preview"].priors.max_models == 1


@pytest.mark.slow
def test_a_preview_then_a_generate_share_one_loaded_prior(models, ict_rig, tmp_path):
    loads: list = []
    alive = _live_priors()  # other tests' module fixtures may hold theirs
    cache = PriorCache(loader=_counting(loads))
    preview = PreviewRunner(models_dir=models, render_normals=sphere_normals, priors=cache)
    generate = GenerateRunner(models_dir=models, priors=cache)
    generate._export = lambda field, params, ctx, cameras: (None, {"skipped": True}, {})  # export: test_distill_job
    preview.run(PreviewParams(steps=2, reference_framing="centre"), mesh_inputs(), JobContext("p", tmp_path / "p"))
    (prior,) = cache.held("cpu")
    before = prior.counter.snapshot()
    assert before["vae_encodes"] == 1  # the preview's reference

    rng = np.random.default_rng(1)
    params = GenerateParams(prompt="a man", rig=RigState(model="ict"), prior=PriorConfig(mode="joker"),
                            distill=DistillConfig(**TINY), reference_framing="centre")
    inputs = {"vertices": ict_rig.neutral, "faces": ict_rig.normal_region_faces,
              "reference": Png(encode_png(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))}
    result = generate.run(params, inputs, JobContext("g", tmp_path / "g"))
    assert len(loads) == 1 and cache.held("cpu") == [prior]  # the generate used the preview's prior, loaded once
    counts = result.meta["costs"]["counts"]
    assert prior.counter.since(before)["prior_evals"] == counts["prior_evals"] == 6 * 4  # its passes ran on it
    # the job's costs are its own, not the shared prior's history: 6 views x 3 target updates + its reference
    assert counts["vae_encodes"] == 6 * 3 + 1
    del prior, generate, preview
    assert _live_priors() == alive + 1  # one SD1.5 stack in memory, not one per job kind


def test_a_config_change_replaces_the_prior_and_frees_the_old_one(models):
    loads: list = []
    alive = _live_priors()
    cache = PriorCache(loader=_counting(loads))
    first = cache.get(PriorConfig(mode="joker"), models, "cpu")
    assert cache.get(PriorConfig(mode="joker"), models, "cpu") is first and len(loads) == 1
    gone = weakref.ref(first)
    del first
    second = cache.get(PriorConfig(mode="joker", controlnet_scale=0.5), models, "cpu")
    assert len(loads) == 2 and cache.held("cpu") == [second]
    gc.collect()
    assert gone() is None  # dropped before the new one loaded: the memory does not double
    del second
    assert _live_priors() == alive + 1


def test_the_bound_holds_least_recently_used_first(models):
    loads: list = []
    alive = _live_priors()
    cache = PriorCache(max_models=2, loader=_counting(loads))
    configs = [PriorConfig(mode="joker", controlnet_scale=s) for s in (1.0, 0.5, 0.25)]
    a = cache.get(configs[0], models, "cpu")
    cache.get(configs[1], models, "cpu")
    assert cache.get(configs[0], models, "cpu") is a  # a hit: configs[0] becomes the most recent
    c = cache.get(configs[2], models, "cpu")  # configs[1], the least recent, goes
    assert cache.held("cpu") == [a, c] and len(cache) == 2 and len(loads) == 3
    gone = weakref.ref(a)
    del a
    cache.get(configs[1], models, "cpu")  # now configs[0] is the least recent and goes
    assert len(loads) == 4 and len(cache) == 2 and cache.held("cpu")[0] is c
    assert gone() is None and _live_priors() == alive + 2  # never more than the bound alive
    del c
    cache.clear()
    assert len(cache) == 0 and _live_priors() == alive


def test_two_jobs_asking_at_once_load_once(models):
    loads: list = []
    cache = PriorCache(loader=_counting(loads))
    got: list = []
    start = threading.Barrier(2)

    def ask() -> None:
        start.wait()
        got.append(cache.get(PriorConfig(mode="joker"), models, "cpu"))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and got[0] is got[1]


def test_a_bound_below_one_is_refused():
    with pytest.raises(ValueError, match=r"max_models: expected an integer >= 1, received 0"):
        PriorCache(max_models=0)


def test_generate_checks_the_mesh_indices_before_any_work(tmp_path):
    inputs = {"vertices": np.zeros((3, 3), np.float32), "faces": np.array([[0, 1, 7]], np.int32)}
    with pytest.raises(JobFailed, match=r"inputs.faces: expected indices in \[0, 3\), received \[0, 7\]") as e:
        GenerateRunner(priors=PriorCache()).run(GenerateParams(), inputs, JobContext("g", tmp_path))
    assert e.value.code == "invalid_input"


def test_the_oracle_head_is_the_named_rig_or_the_sent_mesh(ict_rig):
    from backend.distill.oracle import oracle_head_for

    sent = ict_rig.neutral * 1.1
    posed = oracle_head_for(RigState(model="ict", expressions={"jawOpen": 0.3}), sent, ict_rig.faces)
    assert np.allclose(posed.vertices, ict_rig.evaluate(expressions={"jawOpen": 0.3}), rtol=0, atol=1e-6)
    own = oracle_head_for(RigState(model="no-such-rig"), sent, ict_rig.faces)
    assert np.array_equal(own.vertices, sent.astype(np.float64)) and len(own.faces) == len(ict_rig.faces)
    assert own.colours.shape == own.vertices.shape and 0 <= own.colours.min() and own.colours.max() <= 1

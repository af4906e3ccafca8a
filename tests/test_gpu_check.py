"""The one-shot GPU check (bench/gpu_check.sh) cannot rot: its CPU dry run (tiny prior, small sizes) runs every part
through the same code the GPU run uses and prints every line of figures; the extrapolation is checked by hand."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backend.distill.schedule import whole_head_seconds
from shared.config import DistillConfig
from shared.config.distill import COSTS

REPO = Path(__file__).resolve().parents[1]
LAST = re.compile(r"^gpu: preview_s=(\S+) turbo_head_s=(\S+) fast_head_s=(\S+) paper_head_s=(\S+) "
                  r"stage1_ms_per_view=(\S+) peak_gib=(\S+)$")


@pytest.mark.slow
def test_cpu_dry_run_prints_every_part_and_the_last_line(ict_npz, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path),
           "JOKER_SHARED_DATA": str(ict_npz.parents[2])}
    out = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--cpu-dry-run"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = [ln for ln in out.stdout.splitlines() if ln and not ln.startswith(" ")]
    parts = [ln.split(":")[0] for ln in lines]
    for part in ("tests", "models", "preview", "prior", "turbo", "fast", "paper", "oracle", "costs"):
        assert part in parts, f"no '{part}:' line in\n{out.stdout}"
    assert "skipped" in next(ln for ln in lines if ln.startswith("tests:"))  # the CUDA tests skip on the CPU
    assert "(ict mesh)" in next(ln for ln in lines if ln.startswith("preview:"))
    assert "to its end" in next(ln for ln in lines if ln.startswith("oracle:"))
    m = LAST.match(lines[-1])
    assert m, lines[-1]
    preview_s, turbo, fast, paper, stage1_ms = (float(x) for x in m.groups()[:5])
    assert preview_s > 0 and stage1_ms > 0
    assert 0 < turbo < paper and 0 < fast < paper  # measured unit costs times each preset's own schedule
    # the costs line pastes into shared.config.distill.COSTS as it is
    costs = json.loads(next(ln for ln in lines if ln.startswith("costs:")).split("): ", 1)[1])
    assert set(costs) == set(COSTS["cuda"]) and costs["source"] == "measured"
    assert all(v > 0 for k, v in costs.items() if k != "source")


def test_whole_head_extrapolation_by_hand():
    cfg = DistillConfig(preset="draft", n_az=2, n_el=1, levels=4, stage1_fraction=0.5, update_every=10, steps=40,
                        resolutions=(8, 16), milestones=(15,))
    units = {"step_s": 0.5, "render_ray_s": 0.001, "target_view_s": 2.0, "ddim_view_s": 0.25}
    # updates: step 0 (8 px) and step 10 (8 px) one-step; Stage 2 at step 20 (16 px), 2 DDIM steps; 2 views each
    expected = 40 * 0.5 + 2 * (64 * 0.001 + 2.0) * 2 + 2 * (256 * 0.001 + 2.0 + 1 * 0.25)
    assert whole_head_seconds(cfg, units) == pytest.approx(expected, rel=1e-12)

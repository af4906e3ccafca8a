"""Distil the oracle head and measure: held-out-view PSNR / SSIM, wall time, steps/s; then the same budget under the
perturbed oracle (view-inconsistent perturbations growing with the noise level) with the progressive schedule and
with a dynamic-target baseline (a random noise level every step, as SDS-style methods do).

    python bench/distill_oracle.py --quick            # < 1 min: a tiny schedule, a smoke test of the figures
    python bench/distill_oracle.py                    # the draft preset (target: >= 26 dB in 10 min on 2 cores)
    python bench/distill_oracle.py --preset fast      # on a GPU
    python bench/distill_oracle.py --preset turbo --cpu-scale 10   # a GPU preset at the CPU scale (see cpu_scaled)

Every run prints its costs as counted by the code (``backend.costs``): prior evaluations, NeRF steps, target
updates, ray samples marched, and wall seconds per stage.
Last line: ``distill: psnr_db=… ssim=… seconds=… baseline_psnr_db=… perturbed_psnr_db=… steps_per_s=… prior_evals=…
nerf_steps=… ray_samples_m=…`` (psnr_db/ssim: progressive, exact oracle; perturbed_psnr_db: progressive, perturbed
oracle; baseline_psnr_db: dynamic targets, perturbed oracle; all against the exact head on held-out views; the counts
are the exact-oracle run's).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.distill import distill  # noqa: E402
from backend.distill.metrics import psnr, ssim  # noqa: E402
from backend.distill.oracle import OracleGuidance, default_oracle_head, render_oracle  # noqa: E402
from backend.render.volume import render_image  # noqa: E402
from shared.config import DistillConfig  # noqa: E402
from shared.config.distill import PRESETS  # noqa: E402
from shared.conventions import orbit_camera, reference_grid  # noqa: E402

HELD_OUT = [(-38.0, 6.0), (-20.0, -14.0), (-5.0, 11.0), (8.0, -3.0), (26.0, 16.0), (40.0, -9.0)]
QUICK = dict(preset="draft", n_az=4, n_el=3, levels=10, update_every=4, steps=60, batch_views=4, patch=16,
             resolutions=(32,), milestones=(), samples_per_ray=48, grid_levels=6, grid_log2_table=12,
             grid_per_level_scale=1.6)
PERTURB = 1.0
CPU_EVAL_RES = 64  # held-out views of --cpu-scale runs: one resolution for every preset, so they compare


def cpu_scaled(preset: str, factor: int) -> DistillConfig:
    """A GPU preset at the CPU scale: its views, levels and stage split kept, its steps (with target updates and
    milestones) divided by ``factor``, resolutions / 8 (paper 8…64, fast 8…48, turbo 8…32), patch 16, views per step
    / 8, 64 samples per ray, draft's small hash grid, L1 alone and MLP lr 1e-2 (as draft: what a CPU affords).
    The same transform for every preset, so presets compare at the same scale."""
    r = DistillConfig(preset=preset).resolved()
    cfg = DistillConfig(preset=preset, resolutions=tuple(max(8, x // 8) for x in r.resolutions), patch=16,
                        batch_views=max(1, round(r.batch_views / 8)), samples_per_ray=64, grid_levels=8,
                        grid_log2_table=16, grid_per_level_scale=1.486, lpips_weight=0.0, lr_mlp=1e-2)
    return cfg.with_steps(max(1, r.steps // factor))

def held_out(result, head, res: int, samples: int) -> tuple[float, float]:
    """PSNR (dB) and SSIM of ``result`` against the exact head on the HELD_OUT views at ``res`` px."""
    cams = [orbit_camera(a, e, res) for a, e in HELD_OUT]
    truth = torch.from_numpy(np.stack([render_oracle(head, c) for c in cams]))
    with torch.no_grad():
        pred = torch.stack([render_image(result.field, c, samples, result.occupancy)["rgb"].cpu() for c in cams])
    return psnr(pred, truth), ssim(pred, truth)


def run(cfg: DistillConfig, head, perturb: float, device: str, label: str, eval_res: int = 0):
    """Distil the (perturbed) oracle with ``cfg``: (psnr, ssim, seconds, steps/s, counts) and a line of each."""
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el)
    guidance = OracleGuidance(head, cams, r.resolutions[-1], perturb=perturb, seed=7)
    t0 = time.monotonic()
    result = distill(guidance, cams, cfg, device=device, seed=0)
    seconds = time.monotonic() - t0
    p, s = held_out(result, head, eval_res or r.resolutions[-1], r.samples_per_ray)
    c = result.costs
    print(f"  {label:<34} psnr {p:6.2f} dB  ssim {s:.3f}  {seconds:6.1f} s  {r.steps / seconds:5.2f} steps/s",
          flush=True)
    print(f"  {'':<34} counted: {_counts(c.counts)}; seconds: "
          + " ".join(f"{k} {v:.1f}" for k, v in sorted(c.seconds.items())), flush=True)
    return p, s, seconds, r.steps / seconds, c.counts


def _counts(counts: dict) -> str:
    return " ".join(f"{k}={v / 1e6:.2f}M" if v >= 10**6 else f"{k}={v}" for k, v in sorted(counts.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny schedule (< 1 min)")
    ap.add_argument("--preset", default="draft", choices=tuple(PRESETS))
    ap.add_argument("--cpu-scale", type=int, default=0, metavar="K",
                    help="run the preset at the CPU scale with its steps / K (see cpu_scaled); held-out at 64 px")
    ap.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--no-baseline", action="store_true", help="only the exact-oracle run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.cpu_scale:
        cfg = cpu_scaled(args.preset, args.cpu_scale)
        cfg = cfg.with_steps(args.steps) if args.steps else cfg
    else:
        over = dict(QUICK) if args.quick else {"preset": args.preset}
        if args.steps:
            over["steps"] = args.steps
        cfg = DistillConfig(**over)
    eval_res = CPU_EVAL_RES if args.cpu_scale else 0
    head = default_oracle_head({"mouthSmile_L": 0.6, "mouthSmile_R": 0.6})
    scale = f" at the CPU scale 1/{args.cpu_scale}" if args.cpu_scale else ""
    print(f"distill_oracle: preset {cfg.preset}{' (quick)' if args.quick else ''}{scale}, {cfg.n_views} views, "
          f"{cfg.resolved().steps} steps, device {device}, {torch.get_num_threads()} thread(s)", flush=True)
    p, s, seconds, sps, counts = run(cfg, head, 0.0, device, "progressive, exact oracle", eval_res)
    base = pert = float("nan")
    if not args.no_baseline:
        pert = run(cfg, head, PERTURB, device, "progressive, perturbed oracle", eval_res)[0]
        dyn = dataclasses.replace(cfg, targets="dynamic")
        base = run(dyn, head, PERTURB, device, "dynamic targets, perturbed oracle", eval_res)[0]
    print(f"distill: psnr_db={p:.2f} ssim={s:.3f} seconds={seconds:.1f} baseline_psnr_db={base:.2f} "
          f"perturbed_psnr_db={pert:.2f} steps_per_s={sps:.2f} prior_evals={counts.get('prior_evals', 0)} "
          f"nerf_steps={counts.get('nerf_steps', 0)} ray_samples_m={counts.get('ray_samples', 0) / 1e6:.2f}")


if __name__ == "__main__":
    main()

"""Distil the oracle head and measure: held-out-view PSNR / SSIM, wall time, steps/s; then the same budget under the
perturbed oracle (view-inconsistent perturbations growing with the noise level) with the progressive schedule and
with a dynamic-target baseline (a random noise level every step, as SDS-style methods do).

    python bench/distill_oracle.py --quick            # < 1 min: a tiny schedule, a smoke test of the figures
    python bench/distill_oracle.py                    # the draft preset (target: >= 26 dB in 10 min on 2 cores)
    python bench/distill_oracle.py --preset fast      # on a GPU

Last line: ``distill: psnr_db=… ssim=… seconds=… baseline_psnr_db=… perturbed_psnr_db=… steps_per_s=…``
(psnr_db/ssim: progressive, exact oracle; perturbed_psnr_db: progressive, perturbed oracle; baseline_psnr_db: dynamic
targets, perturbed oracle; all against the exact head on held-out views).
"""

from __future__ import annotations

import argparse
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
from shared.conventions import orbit_camera, reference_grid  # noqa: E402

HELD_OUT = [(-38.0, 6.0), (-20.0, -14.0), (-5.0, 11.0), (8.0, -3.0), (26.0, 16.0), (40.0, -9.0)]
QUICK = dict(preset="draft", n_az=4, n_el=3, levels=10, update_every=10, steps=150, batch_views=4, patch=16,
             resolutions=(32,), milestones=(), samples_per_ray=48, grid_levels=6, grid_log2_table=12,
             grid_per_level_scale=1.6)
PERTURB = 1.0


def held_out(result, head, res: int, samples: int) -> tuple[float, float]:
    cams = [orbit_camera(a, e, res) for a, e in HELD_OUT]
    truth = torch.from_numpy(np.stack([render_oracle(head, c) for c in cams]))
    with torch.no_grad():
        pred = torch.stack([render_image(result.field, c, samples, result.occupancy)["rgb"].cpu() for c in cams])
    return psnr(pred, truth), ssim(pred, truth)


def run(cfg: DistillConfig, head, perturb: float, device: str, label: str):
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el)
    guidance = OracleGuidance(head, cams, r.resolutions[-1], perturb=perturb, seed=7)
    t0 = time.monotonic()
    result = distill(guidance, cams, cfg, device=device, seed=0)
    seconds = time.monotonic() - t0
    p, s = held_out(result, head, r.resolutions[-1], r.samples_per_ray)
    print(f"  {label:<34} psnr {p:6.2f} dB  ssim {s:.3f}  {seconds:6.1f} s  {r.steps / seconds:5.2f} steps/s",
          flush=True)
    return p, s, seconds, r.steps / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tiny schedule (< 1 min)")
    ap.add_argument("--preset", default="draft", choices=("paper", "fast", "draft"))
    ap.add_argument("--steps", type=int, default=None, help="override the preset's steps")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--no-baseline", action="store_true", help="only the exact-oracle run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    over = dict(QUICK) if args.quick else {"preset": args.preset}
    if args.steps:
        over["steps"] = args.steps
    cfg = DistillConfig(**over)
    head = default_oracle_head({"mouthSmile_L": 0.6, "mouthSmile_R": 0.6})
    print(f"distill_oracle: preset {cfg.preset}{' (quick)' if args.quick else ''}, {cfg.n_views} views, "
          f"{cfg.resolved().steps} steps, device {device}, {torch.get_num_threads()} thread(s)", flush=True)
    p, s, seconds, sps = run(cfg, head, 0.0, device, "progressive, exact oracle")
    base = pert = float("nan")
    if not args.no_baseline:
        pert = run(cfg, head, PERTURB, device, "progressive, perturbed oracle")[0]
        dyn = DistillConfig(**{**over, "targets": "dynamic"})
        base = run(dyn, head, PERTURB, device, "dynamic targets, perturbed oracle")[0]
    print(f"distill: psnr_db={p:.2f} ssim={s:.3f} seconds={seconds:.1f} baseline_psnr_db={base:.2f} "
          f"perturbed_psnr_db={pert:.2f} steps_per_s={sps:.2f}")


if __name__ == "__main__":
    main()

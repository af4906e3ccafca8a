"""Benchmark: the batched torch rasterizer rendering the reference grid's normal maps, and its parity with the
numpy reference rasterizer. Prints its figures; the LAST line is

    normals: views=… res=… torch_s=… per_view_ms=… parity_pct=…

parity_pct: the worst checked view's share of pixels within one level of the reference. Target: 400 views at 512²
in <= 60 s on 2 CPU cores. Usage: PYTHONPATH=. python bench/normals_bench.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from backend.render import render_normal_maps
from shared.conventions import reference_grid
from shared.morphable import load_default_rig
from shared.raster import render_normal_map


def parity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(% of pixels within one level, silhouette IoU)."""
    within = (np.abs(a.astype(int) - b.astype(int)).max(-1) <= 1).mean() * 100
    ma, mb = a.any(-1), b.any(-1)
    return float(within), float((ma & mb).sum() / max((ma | mb).sum(), 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="40 views, 2 parity checks (< 1 min)")
    ap.add_argument("--views", type=int, default=None, help="views of the 400-view grid (evenly spread)")
    ap.add_argument("--res", type=int, default=512)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads; 0 = torch's default. 1 is the default because the rasterizer is a "
                         "stream of mid-sized elementwise ops: on a shared 2-core box a second OpenMP thread mostly "
                         "spins (measured: 4x the CPU time, 3.6x slower wall clock)")
    ap.add_argument("--chunk", type=int, default=16, help="views per rasterizer chunk")
    ap.add_argument("--checks", type=int, default=None, help="views compared with the numpy reference")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    n_views = args.views or (40 if args.quick else 400)
    n_checks = args.checks or (2 if args.quick else 6)

    rig = load_default_rig()
    vertices = rig.evaluate(expressions={"jawOpen": 0.3, "mouthSmile_L": 0.6, "mouthSmile_R": 0.6})
    grid = reference_grid(res=args.res)
    cameras = [grid[i] for i in np.linspace(0, len(grid) - 1, n_views).round().astype(int)]
    v, f = torch.from_numpy(vertices), torch.from_numpy(rig.normal_region_faces)
    print(f"rig {rig.name}: {rig.n_vertices} vertices, {len(rig.normal_region_faces)} normal-map faces; "
          f"device {args.device}, {torch.get_num_threads()} CPU threads, chunk {args.chunk}")

    render_normal_maps(v, f, cameras[:1], device=args.device)  # warm-up (allocator, CUDA context)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    maps = render_normal_maps(v, f, cameras, device=args.device, views_per_chunk=args.chunk)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    torch_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    maps = maps.cpu().numpy()
    print(f"torch: {n_views} views at {args.res}² in {torch_s:.2f} s wall ({cpu_s:.2f} s process CPU); "
          f"projected to 400 views: {torch_s / n_views * 400:.1f} s")

    worst_pct, worst_iou, ref_s = 100.0, 1.0, 0.0
    for i in np.linspace(0, n_views - 1, n_checks).round().astype(int):
        t = time.perf_counter()
        ref = render_normal_map(vertices, rig.normal_region_faces, cameras[i])
        ref_s += time.perf_counter() - t
        pct, iou = parity(maps[i], ref)
        worst_pct, worst_iou = min(worst_pct, pct), min(worst_iou, iou)
    print(f"parity with the numpy reference on {n_checks} views: worst {worst_pct:.4f} % of pixels within one "
          f"level, worst silhouette IoU {worst_iou:.5f}; reference {ref_s / n_checks * 1000:.0f} ms/view")
    print(f"normals: views={n_views} res={args.res} torch_s={torch_s:.2f} per_view_ms={torch_s / n_views * 1000:.1f} "
          f"parity_pct={worst_pct:.3f}")


if __name__ == "__main__":
    main()

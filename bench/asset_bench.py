"""Asset benchmark: the whole exported head against the oracle head, which is known all around.

Distils the oracle head (the ICT rig posed with a smile, procedural albedo, baked shading) from the preset's usual
views (azimuth ±45°, elevation ±20°), exports it with the rig's completion (``backend.export.complete``) and scores
the GLB where the views looked and where they did not:

* face_chamfer_mm: symmetric mean Chamfer distance over the front of the face (azimuth within ±45° of +Z, above the
  chin): mesh points to the rig's body (skin, sockets, eyeballs), the rig's skin to the mesh;
* head_within3mm: share of the true skin (face, scalp, ears, neck: the ``face`` and ``head_neck`` regions; area-
  uniform samples) within 3 mm of the mesh;
* psnr_in_db / psnr_side_db / psnr_back_db: the exported textured mesh (texture sampled bilinearly, unlit, as the
  oracle's colours are) against the oracle's render over the pixels either shows a head in, at held-out views inside
  the training range / at azimuth 60-90° / behind the head (azimuth 135-180°);
* open_edges: of the exported head; seconds: the whole run (distillation + export).

    python bench/asset_bench.py --quick   # < 1 min: a short distillation, rough figures
    python bench/asset_bench.py           # the draft preset to its end (~10 min on 2 cores), export at 50k faces
    python bench/asset_bench.py --save-field f.pt; python bench/asset_bench.py --field f.pt  # re-export only

The exporter is given the distilled field's environment map as the generate job gives it (background specks).

Last line: ``asset: face_chamfer_mm=… head_within3mm=… psnr_in_db=… psnr_side_db=… psnr_back_db=… open_edges=…
seconds=…``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.distill import distill  # noqa: E402
from backend.distill.oracle import OracleGuidance, background, oracle_head, render_oracle_views  # noqa: E402
from backend.export import Completion, export_field, rig_body  # noqa: E402
from backend.render import interpolate, rasterize_chunks  # noqa: E402
from shared.config import DistillConfig  # noqa: E402
from shared.config.export import ExportConfig  # noqa: E402
from shared.conventions import orbit_camera, pixel_rays, reference_grid  # noqa: E402
from shared.morphable import load_default_rig  # noqa: E402
from testkit.export_helpers import load_glb  # noqa: E402

EXPRESSIONS = {"mouthSmile_L": 0.6, "mouthSmile_R": 0.6}
QUICK = dict(preset="draft", n_az=4, n_el=3, levels=10, update_every=10, steps=150, batch_views=4, patch=16,
             resolutions=(32,), milestones=(), samples_per_ray=48, grid_levels=6, grid_log2_table=12,
             grid_per_level_scale=1.6)
VIEWS = {  # (azimuth, elevation) in degrees; "in" avoids the training grid's own angles
    "in": [(-38.0, 6.0), (-20.0, -14.0), (-5.0, 11.0), (8.0, -3.0), (26.0, 16.0), (40.0, -9.0)],
    "side": [(60.0, 0.0), (75.0, 10.0), (90.0, -5.0), (-60.0, 5.0), (-75.0, -10.0), (-90.0, 0.0)],
    "back": [(135.0, 0.0), (160.0, 10.0), (180.0, 0.0), (-135.0, -5.0), (-160.0, 0.0)],
}
SCORE_RES = 128


def skin_points(model, vertices: np.ndarray, count: int) -> np.ndarray:
    """float64 [count, 3] area-uniform samples of the posed rig's skin (face + head_neck regions)."""
    import trimesh

    keep = model.region_mask("face", "head_neck")
    f = model.faces[keep[model.faces].all(axis=1)]
    pts, _ = trimesh.sample.sample_surface(trimesh.Trimesh(vertices, f, process=False), count, seed=0)
    return pts


def front(p: np.ndarray) -> np.ndarray:
    """bool [N]: within ±45° azimuth of the face direction (+Z) and above the chin (y > -0.09 m)."""
    return (np.abs(np.degrees(np.arctan2(p[:, 0], p[:, 2]))) <= 45.0) & (p[:, 1] > -0.09)


def geometry_scores(mesh, model, vertices: np.ndarray, body) -> tuple[float, float]:
    pts, _ = mesh.sample(60_000, return_index=True)
    skin = skin_points(model, vertices, 60_000)
    to_mesh = cKDTree(pts).query(skin, workers=2)[0]
    within = float((to_mesh < 0.003).mean())
    import trimesh

    body_pts = np.concatenate([trimesh.sample.sample_surface(trimesh.Trimesh(v, f, process=False), 40_000,
                                                             seed=1)[0] for v, f in body])
    mesh_front = pts[front(pts)]
    a = cKDTree(body_pts).query(mesh_front, workers=2)[0].mean()
    b = to_mesh[front(skin)].mean()
    return 1000.0 * 0.5 * (a + b), within


def render_glb(mesh, cameras) -> np.ndarray:
    """float32 [N, H, W, 3] renders of a textured trimesh (unlit texture, bilinear) over the oracle's background."""
    tex = torch.from_numpy(np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"), np.float32) / 255.0)
    v = torch.from_numpy(np.asarray(mesh.vertices, np.float32))
    f = torch.from_numpy(np.asarray(mesh.faces, np.int64))
    uv = torch.from_numpy(np.asarray(mesh.visual.uv, np.float32))
    out = []
    for chunk, frag in rasterize_chunks(v, f, cameras):
        st = interpolate(frag, f, uv)  # [n, H, W, 2]
        grid = torch.stack([st[..., 0] * 2 - 1, 1 - st[..., 1] * 2], -1)  # v up -> image rows down
        img = torch.nn.functional.grid_sample(tex.permute(2, 0, 1)[None].expand(len(st), -1, -1, -1), grid,
                                              mode="bilinear", align_corners=False).permute(0, 2, 3, 1).numpy()
        for k, cam in enumerate(cameras[chunk]):
            _, dirs = pixel_rays(cam)
            hit = (frag.face_idx[k] >= 0).numpy()[..., None]
            out.append(np.where(hit, img[k], background(dirs)).astype(np.float32))
    return np.stack(out)


def psnr_db(pred: np.ndarray, truth: np.ndarray, bg: np.ndarray) -> float:
    """PSNR over the pixels where either image differs from the background (the head in either)."""
    mask = (np.abs(pred - bg).max(-1) > 1e-4) | (np.abs(truth - bg).max(-1) > 1e-4)
    mse = float(((pred - truth)[mask] ** 2).mean())
    return -10.0 * np.log10(max(mse, 1e-12))


def image_scores(mesh, head) -> dict[str, float]:
    scores = {}
    for name, angles in VIEWS.items():
        cams = [orbit_camera(a, e, SCORE_RES) for a, e in angles]
        truth = render_oracle_views(head, cams).transpose(0, 2, 3, 1)
        bg = np.stack([background(pixel_rays(c)[1]) for c in cams]).astype(np.float32)
        scores[name] = psnr_db(render_glb(mesh, cams), truth, bg)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a short distillation and a 128³ export (< 1 min)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 on a shared machine)")
    ap.add_argument("--out", type=Path, default=None, help="write head.glb and visibility.png into this folder")
    ap.add_argument("--save-field", type=Path, default=None, help="save the distilled field (torch.save) here")
    ap.add_argument("--field", type=Path, default=None,
                    help="export and score this saved field instead of distilling (same mode: --quick or not); "
                         "seconds then count the export and the scoring only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    t0 = time.perf_counter()
    model = load_default_rig("ict")
    vertices = model.evaluate(expressions=EXPRESSIONS).astype(np.float64)
    head = oracle_head(model, expressions=EXPRESSIONS)
    cfg = DistillConfig(**QUICK) if args.quick else DistillConfig(preset="draft")
    r = cfg.resolved()
    cams = reference_grid(512, r.n_az, r.n_el, r.view_az_deg, r.view_el_deg)
    if args.field is not None:  # a field this script saved: iterate on the export without distilling again
        field = torch.load(args.field, map_location=device, weights_only=False)
    else:
        field = distill(OracleGuidance(head, cams, r.resolutions[-1]), cams, cfg, device=device, seed=0).field
        if args.save_field is not None:
            torch.save(field, args.save_field)
    t_distill = time.perf_counter() - t0
    export = ExportConfig(resolution=96, faces=12_000, texture=512) if args.quick else ExportConfig()
    body = rig_body(model, vertices)
    # as the generate job does: the distilled field's environment map, so texels showing it count as unseen
    completion = Completion(body, cams, background=getattr(field, "background", None))
    out = export_field(field, export, completion=completion)
    m = out.meta
    source = "loaded" if args.field else f"{r.steps} steps"
    print(f"distill {t_distill:.1f} s ({source}, {len(cams)} views); export {m['timings_s']['total']:.1f} s "
          f"({m['faces']} faces): " + ", ".join(f"{k} {v:.1f}" for k, v in m["timings_s"].items() if k != "total"))
    print(f"components {m['components']} -> {m['kept_components']}, charts {m['charts']}, uv use "
          f"{m['uv_utilization']:.2f}, texel coverage {m['texel_coverage']:.2f}, seen vertices "
          f"{m.get('seen_vertex_fraction', 0):.2f}, background share {m.get('background_share', 0):.3f}, field "
          f"resolved {m.get('field_resolved_fraction', 0):.2f} (median thickness {m.get('field_thickness_mm')} mm)",
          flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "head.glb").write_bytes(out.glb)
        for name, data in out.files.items():
            (args.out / name).write_bytes(data)
    mesh = load_glb(out.glb)
    chamfer, within = geometry_scores(mesh, model, vertices, body)
    ps = image_scores(mesh, head)
    seconds = time.perf_counter() - t0
    print(f"asset: face_chamfer_mm={chamfer:.2f} head_within3mm={within:.3f} psnr_in_db={ps['in']:.2f} "
          f"psnr_side_db={ps['side']:.2f} psnr_back_db={ps['back']:.2f} open_edges={m['open_edges']} "
          f"seconds={seconds:.1f}")


if __name__ == "__main__":
    main()

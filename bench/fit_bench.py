"""Benchmark: portrait -> face -> reference crop -> landmarks -> fitted rig. Prints its figures; the LAST line is

    fit: detect_ms=… fit_ms=… landmark_px=… crop_px=… shape_mm=… shape_detector_mm=… shape_detector_se_mm=…
         mean_face_mm=… renders=… framing_px=… raw_jitter_px=… crop_raw_px=… crop_mesh_px=…
         shape_sizefree_mm=… shape_detector_sizefree_mm=… mean_face_sizefree_mm=… size_sd_pct=…
         size_detector_sd_pct=… size_mean_face_sd_pct=…   (one line)

detect_ms     median CPU time of detection on the real photos (astronaut, Grace Hopper), one thread, warm: the MTCNN
              cascade and the steadying of its 5 points (the O-Net on jittered boxes)
fit_ms        median CPU time of everything after detection (the reference crop, face mesh, rig fit on the
              landmarks and then on the skin's shading), one thread, warm: the rig's tables built once per process
landmark_px   mean reprojection error of the fitted rig's 68 landmarks at 512² on the real photos
crop_px       largest crop-corner disagreement (512² px) between a photo and its scaled / shifted / padded copies,
              crops as shipped (on MTCNN's steadied points)
framing_px    how far the shipped crop frames the face from the reference's framing: corner distance (512² px) to the
              mean of the crops on MTCNN's raw points over the photo and its copies (largest over the photos)
raw_jitter_px the reference's own jitter: the raw-MTCNN crops' largest corner distance from that mean
crop_raw_px, crop_mesh_px   crop_px for crops on MTCNN's raw points and on the face mesh's 5 points
shape_mm      mean vertex error of the recovered neutral face (ICT face region, rigid alignment) on heads with
              N(0, 1) identity, fitted from their projected 468 mesh points with σ = 1.5 px noise
shape_detector_mm   the same through the detector: rendered heads -> MTCNN -> crop -> MediaPipe -> fit, as shipped
              (landmarks, then the shading; every head)
shape_detector_se_mm  its standard error over the renders (the spread: compare figures only beyond ~2 of these)
mean_face_mm  what guessing the mean face scores on the same heads
renders       how many heads the detector found (of --heads)
*_sizefree_mm the same three errors when the alignment may also scale the face: its shape, its size apart
size_*_sd_pct the spread (sd, %) of the size error: the true face's size over the fitted one's (projected points,
              through the detector, the mean face). One photo cannot tell a face from the same face k times larger
              and k times farther, so size only comes through the model's shape; each % costs ~0.75 mm rigid
Heads are drawn from HEAD_SEED, disjoint from the seeds the fit's data were built from (the correspondence table 0,
the response model 1000, FIT.md's calibration / held-out studies 1000-1001 / 2000-2001) and the tests' small seeds.
Targets: shape_mm <= 2.5, crop_px <= 2, landmark_px <= 3, detect + fit <= 1 s on one CPU core.
Usage: PYTHONPATH=. python bench/fit_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one core, set before numpy loads BLAS
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402


HEAD_SEED = 3000


def _photo_paths() -> list[Path]:
    def find(package: str, *parts: str) -> Path:
        return Path(list(importlib.util.find_spec(package).submodule_search_locations)[0]).joinpath(*parts)

    return [find("skimage", "data", "astronaut.png"), find("matplotlib", "mpl-data", "sample_data",
                                                           "grace_hopper.jpg")]


def _cameraman_path() -> Path:
    """scikit-image's camera.png: a small (~80 px), turned face; only in the full run's crop figures."""
    return Path(list(importlib.util.find_spec("skimage").submodule_search_locations)[0]) / "data" / "camera.png"


def _timed(fn, *args, repeat: int = 3):
    """(result, median ms of process CPU time). CPU time, not wall clock: everything runs on one thread (torch
    set to 1, OMP_NUM_THREADS=1 for MediaPipe's delegate), so CPU time is the one-core time even when the machine
    is shared and the wall clock is not."""
    times, out = [], None
    for _ in range(repeat):
        t = time.process_time()
        out = fn(*args)
        times.append(time.process_time() - t)
    return out, float(np.median(times)) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer heads and one photo for crop_px (< 1 min)")
    ap.add_argument("--heads", type=int, default=None, help="heads for shape_mm (default 20 quick, 30 full)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from backend.fit import detect_faces, fit_rig, five_from_mesh, load_photo, steady_landmarks
    from backend.fit.correspondence import load_mesh_points
    from backend.fit.headshot import render_headshot
    from backend.fit import aligned_crop
    from backend.fit.metrics import compare_shapes, crop_stability, shape_error_mm
    from backend.fit.portrait import fit_landmarks
    from shared.conventions import crop_camera, project_points
    from shared.morphable import load_default_rig

    rig = load_default_rig()
    points = load_mesh_points(rig)
    photos = [load_photo(p) for p in _photo_paths()]
    warm_faces = detect_faces(photos[0])  # warm: load the nets
    warm_crop, warm_mesh = aligned_crop(photos[0], warm_faces[0])  # and the rig's tables (correspondence, skin)
    fit_landmarks(rig, warm_mesh, image=warm_crop.image)

    # 1. real photos: timing and landmark error; MTCNN's points against the face mesh's
    detect_t, fit_t, lmk = [], [], []
    for path, image in zip(_photo_paths(), photos):
        faces, t_det = _timed(detect_faces, image)
        steady, t_steady = _timed(steady_landmarks, image, faces[0])
        (crop, mesh), t_crop = _timed(aligned_crop, image, faces[0])  # includes the steadying again
        fit, t_fit = _timed(lambda m, im: fit_landmarks(rig, m, image=im), mesh, crop.image)
        detect_t.append(t_det + t_steady)
        fit_t.append(t_crop - t_steady + t_fit)
        lmk.append(float(fit.residual_px.mean()))
        print(f"{path.name}: detect {t_det:.0f} ms + steady points {t_steady:.0f} ms, crop+mesh "
              f"{t_crop - t_steady:.0f} ms, rig fit {t_fit:.0f} ms; landmark error mean {lmk[-1]:.2f} px (median "
              f"{np.median(fit.residual_px):.2f}); pose (deg) {np.round(np.degrees(fit.state.pose), 1).tolist()}; "
              f"{fit.verdict}; identity from the shading too: {fit.shading_error is not None} (skin colour error "
              f"{fit.shading_error if fit.shading_error is None else round(fit.shading_error, 3)})")
        mesh5 = five_from_mesh(mesh)  # crop px of the shipped crop
        for label, pts in (("raw", faces[0].landmarks5), ("steadied", steady)):
            d = crop.points_to_crop(pts) - mesh5
            print(f"  MTCNN {label} - mesh 5 points (crop px, dx dy: eye, eye, nose, mouth, mouth): "
                  + "  ".join(f"{x:+.1f} {y:+.1f}" for x, y in d))

    # 2. crop stability under scaled, shifted, padded copies; framing against MTCNN's raw points (the reference's)
    named = list(zip(_photo_paths(), photos))
    if not args.quick:
        named.append((_cameraman_path(), load_photo(_cameraman_path())))
    shipped, raw_moved, mesh_moved = {}, [], []
    for path, image in named[: 1 if args.quick else 3]:
        st = shipped[path.name] = crop_stability(image, "mtcnn")
        raw = crop_stability(image, "mtcnn raw")
        raw_moved.append(max(raw.moved.values()))
        mesh_moved.append(max(crop_stability(image, "mesh").moved.values()))
        print(f"{path.name}: crop corners moved " + ", ".join(f"{k} {v:.2f} px" for k, v in st.moved.items())
              + f"; on raw MTCNN points {raw_moved[-1]:.2f} px, on mesh points {mesh_moved[-1]:.2f} px; framing vs "
              f"the raw-MTCNN crops' mean {st.to_mean_raw:.2f} px (their own spread {st.raw_spread:.2f} px)")
        print("  5-point jitter between copies (crop px; eye, eye, nose, mouth, mouth): raw MTCNN "
              + " ".join(f"{v:.1f}" for v in raw.point_jitter) + ", steadied "
              + " ".join(f"{v:.1f}" for v in st.point_jitter))
    on_photos = [v for k, v in shipped.items() if k != "camera.png"]  # the targets' photos; the cameraman: shown
    crop_px = max(max(v.moved.values()) for v in on_photos)
    framing_px = max(v.to_mean_raw for v in on_photos)
    raw_jitter = max(v.raw_spread for v in on_photos)
    n_target = len(on_photos)

    # 3. the reference's per-view framing vs the fixed, centred grid (ICT mean head, neutral)
    from shared.framing import reference_view_cameras
    from shared.conventions import reference_grid

    grid = reference_grid()[:: 10 if args.quick else 1]
    lm3d = rig.neutral[rig.arrays["landmarks68"]].astype(np.float64)
    views = reference_view_cameras(grid, lm3d)
    ratio = np.array([v.K[0, 0] / c.K[0, 0] for v, c in zip(views, grid)])
    shift = np.array([v.K[:2, 2] - c.K[:2, 2] for v, c in zip(views, grid)])
    print(f"reference framing of {len(grid)} grid views vs centred views: focal x{ratio.min():.3f}.."
          f"x{ratio.max():.3f}, principal point shift dx {shift[:, 0].min():+.1f}..{shift[:, 0].max():+.1f} px, "
          f"dy {shift[:, 1].min():+.1f}..{shift[:, 1].max():+.1f} px at 512² "
          "(not negligible: use reference_view_cameras)")

    # 4. heads of known identity: projected mesh points + noise, and through the detector (every head rendered)
    n_heads = args.heads or (20 if args.quick else 30)
    rng = np.random.default_rng(HEAD_SEED)
    proj, det, mean_det = [], [], []
    variants: dict[str, list[float]] = {"landmarks only (before)": [], "calibrated (opt-in)": []}
    shaded = 0
    mean_err = []
    for i in range(n_heads):
        identity = rng.normal(size=rig.n_identity)
        pose = (rng.uniform(-0.15, 0.15), rng.uniform(-0.35, 0.35), rng.uniform(-0.08, 0.08))
        V = rig.evaluate(identity, None, pose).astype(np.float64)
        target = project_points(crop_camera(), points.of(V))[0] + rng.normal(0, 1.5, (len(points.index), 2))
        proj.append(compare_shapes(rig, fit_rig(rig, target, points=points).state.identity, identity))
        mean_face = compare_shapes(rig, None, identity)
        mean_err.append(mean_face.rigid_mm)
        shot = render_headshot(rig, identity, None, pose)
        faces = detect_faces(shot.image)
        if faces:
            crop, mesh = aligned_crop(shot.image, faces[0])
            shipped = fit_landmarks(rig, mesh, image=crop.image)
            shaded += shipped.shading_error is not None
            det.append(compare_shapes(rig, shipped.state.identity, identity))
            mean_det.append(mean_face)
            variants["landmarks only (before)"].append(shape_error_mm(
                rig, fit_landmarks(rig, mesh).state.identity, identity))
            if not args.quick:  # the opt-in response model, for comparison (the full run only: time)
                variants["calibrated (opt-in)"].append(shape_error_mm(
                    rig, fit_landmarks(rig, mesh, calibrated=True).state.identity, identity))
    P, D, M = (np.array(x, dtype=np.float64).reshape(-1, 3) for x in (proj, det, mean_det))  # rigid, similar, ratio
    se = lambda x: float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")  # noqa: E731
    size_sd = lambda x: float(np.std(x[:, 2], ddof=1) * 100.0) if len(x) > 1 else float("nan")  # noqa: E731
    print(f"{n_heads} heads: shape error {P[:, 0].mean():.2f} mm from projected points (σ 1.5 px); mean face "
          f"{np.mean(mean_err):.2f} mm")
    print(f"through the detector ({len(D)} renders, {shaded} refined on the shading): {D[:, 0].mean():.2f} ± {se(D[:, 0]):.2f} mm (mean ± standard "
          f"error; per head sd {np.std(D[:, 0], ddof=1):.2f}), vs the mean face on the same heads "
          f"{np.mean(D[:, 0] - M[:, 0]):+.2f} ± {se(D[:, 0] - M[:, 0]):.2f} mm")
    print(f"  size apart (similarity alignment): projected points {P[:, 1].mean():.2f} mm, detector "
          f"{D[:, 1].mean():.2f} mm, mean face {M[:, 1].mean():.2f} mm (detector vs mean face "
          f"{np.mean(D[:, 1] - M[:, 1]):+.2f} ± {se(D[:, 1] - M[:, 1]):.2f}); size error sd: projected points "
          f"{size_sd(P):.1f} %, detector {size_sd(D):.1f} %, mean face {size_sd(M):.1f} %")
    for name, errs in ((k, v) for k, v in variants.items() if v):
        d = np.array(errs) - D[:, 0]
        print(f"  {name}: {np.mean(errs):.2f} mm, vs the default {np.mean(d):+.2f} ± {se(d):.2f} mm")
    cal_lmk = [float(fit_landmarks(rig, aligned_crop(im, detect_faces(im)[0])[1], calibrated=True).residual_px.mean())
               for im in photos] if not args.quick else [float("nan")]
    only_lmk = [float(fit_landmarks(rig, aligned_crop(im, detect_faces(im)[0])[1]).residual_px.mean()) for im in photos]
    print(f"  landmarks only (before) on the real photos: landmark error {np.mean(only_lmk):.2f} px")
    if not args.quick:
        print(f"  calibrated (opt-in) on the real photos: landmark error {np.mean(cal_lmk):.2f} px (default "
              f"{np.mean(lmk):.2f})")
    print(f"fit: detect_ms={np.median(detect_t):.0f} fit_ms={np.median(fit_t):.0f} landmark_px={np.mean(lmk):.2f} "
          f"crop_px={crop_px:.2f} shape_mm={P[:, 0].mean():.2f} shape_detector_mm={D[:, 0].mean():.2f} "
          f"shape_detector_se_mm={se(D[:, 0]):.2f} mean_face_mm={np.mean(mean_err):.2f} renders={len(D)} "
          f"framing_px={framing_px:.2f} raw_jitter_px={raw_jitter:.2f} "
          f"crop_raw_px={max(raw_moved[:n_target]):.2f} crop_mesh_px={max(mesh_moved[:n_target]):.2f} "
          f"shape_sizefree_mm={P[:, 1].mean():.2f} shape_detector_sizefree_mm={D[:, 1].mean():.2f} "
          f"mean_face_sizefree_mm={M[:, 1].mean():.2f} size_sd_pct={size_sd(P):.1f} "
          f"size_detector_sd_pct={size_sd(D):.1f} size_mean_face_sd_pct={size_sd(M):.1f}")


if __name__ == "__main__":
    main()

"""How MediaPipe's 468 mesh points respond to a face's identity: a calibrated measurement model for the fit.

The correspondence table (:mod:`backend.fit.correspondence`) says where each mesh point sits on the *mean* face.
MediaPipe's regression does not follow a face's shape one to one: on rendered heads of known identity its points
move by a median ~0.4 of the surface points' displacement, and along directions of their own (its output is pulled
toward an average face, and its errors are correlated). Fitting the rig's true identity basis to such points
recovers little identity (~4.6 mm vs 4.8 mm for the mean face, bench/fit_bench.py).

So the fit uses the points *as MediaPipe reports them*: per mesh point n, in the head frame (metres)

    X_n(α) = table_n(mean face) + offset_n + Σ_i α_i (B_i,n + delta_i,n)

with ``offset`` [N, 3] and ``delta`` [I, N, 3] learned by ridge regression on rendered heads through the real
pipeline (MTCNN -> aligned crop -> face mesh), linearised at each head's true surface points and posed through
the crop's camera. The ridge pulls ``delta`` toward 0 (the rig's own basis) where the renders say little.
Built once per rig (``python -m backend.fit.response``, seeds disjoint from the benchmark's and the tests');
the ICT model ships in ``data/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.conventions import crop_camera, euler_to_matrix, project_points, project_points_jacobian
from shared.morphable import MorphableModel

from .correspondence import DATA_DIR, SurfacePoints, load_mesh_points, load_rig_table, rig_fingerprint

CALIBRATION_SEED = 1000  # bench/fit_bench.py draws its heads from seed 3000, the table from 0, the tests from small seeds
CALIBRATION_HEADS = 200  # 140 and 280 renders gave the same held-out error: the model is not data-limited
# Ridge strengths in px² per mm² (the regression works in crop px and millimetres). DELTA: the per-mode correction
# of the basis; OFFSET: the mean point's shift (its depth is barely seen from near-frontal views, so firmly held).
RIDGE_DELTA = 30.0
RIDGE_OFFSET = 100.0


@dataclass
class DetectorResponse:
    """offset float64 [N, 3] and delta float64 [I, N, 3], metres, head frame: MediaPipe's point n on a face of
    identity α sits at table_n(mean) + offset_n + Σ_i α_i (B_i,n + delta_i,n) (before pose and expression)."""

    offset: np.ndarray
    delta: np.ndarray


@dataclass
class Calibration:
    """Rendered heads through the pipeline. identity float64 [S, I]; pose float64 [S, 3] (pitch, yaw, roll rad);
    mesh float64 [S, N, 2] MediaPipe's points and true float64 [S, N, 2] the table's points on the true head, both
    in aligned-crop px (512²); jac float64 [S, N, 2, 3] d(crop px)/d(unposed head-frame point, metres)."""

    identity: np.ndarray
    pose: np.ndarray
    mesh: np.ndarray
    true: np.ndarray
    jac: np.ndarray


def response_path(rig: MorphableModel) -> Path:
    return DATA_DIR / f"{rig.name}_mediapipe468_response.npz"


def load_response(rig: MorphableModel) -> DetectorResponse | None:
    """The shipped response model for ``rig`` (None when there is none or it was built for another topology)."""
    return load_rig_table(response_path(rig), rig,
                          lambda z: DetectorResponse(z["offset"].astype(np.float64), z["delta"].astype(np.float64)),
                          valid=lambda z: z["delta"].shape[0] == rig.n_identity)


def crop_jacobian(points_posed: np.ndarray, rotation: np.ndarray, to_crop: np.ndarray) -> np.ndarray:
    """float64 [N, 2, 3]: d(crop px)/d(unposed point) for posed head-frame points [N, 3] (metres) seen by the
    crop camera, ``rotation`` [3, 3] the head's pose and ``to_crop`` [2, 3] the photo-to-crop affine."""
    return to_crop[:, :2][None] @ project_points_jacobian(crop_camera(), points_posed)[2] @ rotation


def render_calibration(rig: MorphableModel, points: SurfacePoints, n_heads: int = CALIBRATION_HEADS,
                       seed: int = CALIBRATION_SEED) -> Calibration:
    """Render ``n_heads`` neutral heads (identity ~ N(0, 1), pitch ±8.6°, yaw ±20°, roll ±4.6°: the benchmark's
    distribution) and run each through detect -> aligned crop -> face mesh. Heads the detector misses are left
    out. ~0.6 s a head on one core."""
    from .detect import detect_faces
    from .headshot import render_headshot
    from .landmarks import aligned_crop

    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("identity", "pose", "mesh", "true", "jac")}
    for _ in range(n_heads):
        identity = rng.normal(size=rig.n_identity)
        pose = (rng.uniform(-0.15, 0.15), rng.uniform(-0.35, 0.35), rng.uniform(-0.08, 0.08))
        shot = render_headshot(rig, identity, None, pose)
        faces = detect_faces(shot.image)
        if not faces:
            continue
        crop, mesh = aligned_crop(shot.image, faces[0])
        posed = points.of(shot.vertices)
        rows["identity"].append(identity)
        rows["pose"].append(pose)
        rows["mesh"].append(mesh)
        rows["true"].append(crop.points_to_crop(project_points(shot.camera, posed)[0]))
        rows["jac"].append(crop_jacobian(posed, euler_to_matrix(*pose), crop.to_crop))
    return Calibration(**{k: np.asarray(v, dtype=np.float64) for k, v in rows.items()})


def learn_response(cal: Calibration, ridge_delta: float = RIDGE_DELTA,
                   ridge_offset: float = RIDGE_OFFSET) -> DetectorResponse:
    """Per mesh point, ridge least squares of ``mesh - true ≈ J (offset + delta · α)`` over the calibration heads
    (2S equations, 3 + 3I unknowns). Returns the response in metres."""
    S, N = cal.mesh.shape[:2]
    I = cal.identity.shape[1]
    J = cal.jac * 1e-3  # px per mm: the ridge strengths are in px² per mm²
    reg = np.diag(np.r_[np.full(3, ridge_offset), np.full(3 * I, ridge_delta)])
    offset, delta = np.zeros((N, 3)), np.zeros((I, N, 3))
    for n in range(N):
        Jn = J[:, n]  # [S, 2, 3]
        X = np.concatenate([Jn, np.einsum("si,sab->sabi", cal.identity, Jn).transpose(0, 1, 3, 2)
                           .reshape(S, 2, 3 * I)], axis=2).reshape(2 * S, -1)
        y = (cal.mesh[:, n] - cal.true[:, n]).reshape(-1)
        theta = np.linalg.solve(X.T @ X + reg, X.T @ y)
        offset[n], delta[:, n] = theta[:3], theta[3:].reshape(I, 3)
    return DetectorResponse(offset * 1e-3, delta * 1e-3)


def main() -> None:
    import argparse

    import torch

    from shared.morphable import load_default_rig

    ap = argparse.ArgumentParser(description="Rebuild the shipped MediaPipe response model of the default rig.")
    ap.add_argument("--heads", type=int, default=CALIBRATION_HEADS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rig = load_default_rig()
    points = load_mesh_points(rig)
    if points is None:
        raise SystemExit(f"no correspondence table for {rig.name}: run python -m backend.fit.correspondence first")
    cal = render_calibration(rig, points, args.heads)
    resp = learn_response(cal)
    np.savez_compressed(response_path(rig), offset=resp.offset.astype(np.float32),
                        delta=resp.delta.astype(np.float32), rig_fingerprint=np.array(rig_fingerprint(rig)),
                        rig_name=np.array(rig.name), heads=np.array(len(cal.identity)),
                        seed=np.array(CALIBRATION_SEED))
    print(f"{response_path(rig)}: {len(cal.identity)} heads, offset rms "
          f"{1000 * np.sqrt((resp.offset ** 2).mean()):.2f} mm, delta rms {1000 * np.sqrt((resp.delta ** 2).mean()):.3f} mm")


if __name__ == "__main__":
    main()

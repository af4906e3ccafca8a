"""The detector response model (backend.fit.response): the learner recovers a known response, and the fit uses it."""

from __future__ import annotations

import numpy as np

from backend.fit import fit_rig
from backend.fit.correspondence import load_mesh_points
from backend.fit.metrics import shape_error_mm
from backend.fit.response import Calibration, DetectorResponse, crop_jacobian, learn_response, load_response
from shared.conventions import crop_camera, euler_to_matrix, project_points
from tests.support import assert_close


def _synthetic(rng, S=40, N=5, I=3) -> tuple[Calibration, DetectorResponse]:
    """A 'detector' whose points follow a known response exactly: mesh = true + J (offset + delta · α)."""
    truth = DetectorResponse(rng.normal(0, 1e-3, (N, 3)), rng.normal(0, 5e-4, (I, N, 3)))
    identity = rng.normal(size=(S, I))
    pose = np.stack([rng.uniform(-0.15, 0.15, S), rng.uniform(-0.35, 0.35, S), rng.uniform(-0.08, 0.08, S)], 1)
    to_crop = np.array([[0.9, 0.0, 10.0], [0.0, 0.9, -5.0]])
    true, mesh, jac = [], [], []
    for a, p in zip(identity, pose):
        R = euler_to_matrix(*p)
        pts = rng.normal(0, 0.05, (N, 3)) @ R.T
        J = crop_jacobian(pts, R, to_crop)
        t = project_points(crop_camera(), pts)[0] @ to_crop[:, :2].T + to_crop[:, 2]
        true.append(t)
        mesh.append(t + np.einsum("nab,nb->na", J, truth.offset + np.einsum("i,inb->nb", a, truth.delta)))
        jac.append(J)
    return Calibration(identity, pose, np.array(mesh), np.array(true), np.array(jac)), truth


def test_crop_jacobian_matches_finite_differences():
    rng = np.random.default_rng(0)
    R = euler_to_matrix(0.1, -0.3, 0.05)
    X = rng.normal(0, 0.05, (4, 3))
    to_crop = np.array([[0.8, 0.0, 12.0], [0.0, 0.8, -3.0]])

    def crop_px(x):
        return project_points(crop_camera(), x @ R.T)[0] @ to_crop[:, :2].T + to_crop[:, 2]

    h = 1e-6
    numeric = np.stack([(crop_px(X + h * e) - crop_px(X - h * e)) / (2 * h) for e in np.eye(3)], axis=-1)
    assert_close(crop_jacobian(X @ R.T, R, to_crop), numeric, rel=1e-6, name="jacobian")


def test_learner_recovers_a_known_response():
    cal, truth = _synthetic(np.random.default_rng(1))
    exact = learn_response(cal, ridge_delta=1e-9, ridge_offset=1e-9)
    assert_close(exact.offset, truth.offset, rel=1e-5, name="offset")
    assert_close(exact.delta, truth.delta, rel=1e-5, name="delta")
    # the ridge pulls toward the rig's own basis (delta 0) but keeps most of a well-observed response
    ridged = learn_response(cal)
    ratio = np.linalg.norm(ridged.delta) / np.linalg.norm(truth.delta)
    assert 0.5 < ratio < 1.0


def test_the_fit_follows_the_response(ict_rig):
    """Points placed where the response says a detector reports a known face are fitted back to that face."""
    points = load_mesh_points(ict_rig)
    resp = load_response(ict_rig)
    assert resp is not None and resp.delta.shape == (ict_rig.n_identity, 468, 3)
    rng = np.random.default_rng(7)
    identity = rng.normal(size=ict_rig.n_identity)
    pose = (0.05, 0.2, -0.03)
    X = points.of(ict_rig.neutral) + resp.offset + np.einsum("i,inc->nc", identity, points_basis(ict_rig, points)
                                                             + resp.delta)
    target = project_points(crop_camera(), X @ euler_to_matrix(*pose).T)[0]
    with_resp = fit_rig(ict_rig, target, points=points, response=resp)
    without = fit_rig(ict_rig, target, points=points)
    err = lambda f: shape_error_mm(ict_rig, f.state.identity, identity)  # noqa: E731
    # noise-free points: the response explains them (the rig's own basis cannot), and the face comes out closer
    assert np.median(with_resp.residual_px) < 0.5 < np.median(without.residual_px)
    assert err(with_resp) < err(without) - 0.25, (err(with_resp), err(without))


def points_basis(rig, points) -> np.ndarray:
    """float64 [I, N, 3] the identity basis at the surface points."""
    return np.einsum("nk,mnkc->mnc", points.weight, rig.identity_basis[:, points.index].astype(np.float64))

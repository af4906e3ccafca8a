"""Fit a morphable rig to 68 landmarks in the reference crop: identity, expression, rotation and translation.

Model (head frame of shared.conventions, metres):   P_k = R(pitch, yaw, roll) · S_k(α, β) + t
    S_k = S̄_k + Σ_i α_i B_id[i]_k + Σ_j β_j B_exp[j]_k    for the rig's 68 landmark vertices k
    u_k = project(crop camera, P_k)                          crop camera: shared.conventions.crop_camera()
Energy (robust least squares in float64: scipy's bounded trust-region solver inside a Huber IRLS loop):
    Σ_k w_k ρ_Huber(|u_k - l_k|)  +  λ_id |α|²  +  λ_exp |β|²,     β ∈ [0, 1],  α ∈ [-α_max, α_max]
The jaw-line landmarks (0-16) are not fixed points of the face: a detector puts them on the silhouette, which
slides over the surface as the head turns, so they get a lower weight (``JAW_WEIGHT``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.conventions import crop_camera, euler_to_matrix, project_points, project_points_jacobian
from shared.jobs import RigState
from shared.morphable import MorphableModel

from .correspondence import SurfacePoints
from .errors import FitError
from .response import DetectorResponse

JAW = slice(0, 17)  # iBUG jaw-line landmarks
JAW_WEIGHT = 0.5  # the silhouette slides: trust the jaw line half as much as the inner points
# Priors in px² per unit² (MAP with landmark noise σ: λ = σ²). MediaPipe's points on a face differ from the rig's
# corresponding points by ~3 px per axis (measured on rendered heads, docs/FIT.md), hence λ_id ≈ 3² ≈ 10; ARKit
# weights are mostly zero, so expressions get a firmer prior than identity.
LAMBDA_ID = 10.0
LAMBDA_EXP = 50.0
# MediaPipe's 468 points through the detector: their errors are correlated (one regression pulls whole regions toward
# an average face), so they carry far fewer independent constraints than 468 and its identity signal is weak. Tuned
# on calibration renders (seeds disjoint from the benchmark's, docs/FIT.md): identity error 10 -> 35 px² fell
# 4.23 -> 4.09 mm (70 heads) and flattens beyond; 30 keeps the real photos' landmark error near 2 px.
LAMBDA_ID_MESH = 30.0
ALPHA_MAX = 5.0
LOSS_SCALE_PX = 3.0  # Huber: residuals beyond ~3 px count linearly (a misplaced landmark cannot drag the fit)
GOOD_PX, ROUGH_PX = 3.0, 8.0  # verdict thresholds on the median landmark residual at 512²
# Beyond this *fitted* yaw the far side of the face is hidden and identity transfer weakens. The fit reads large
# turns short (rendered heads at 60 / 70 degrees fit as 47 / 52: the landmark model flattens profiles), so 40 here
# warns from about 50 degrees of real turn.
PROFILE_YAW_DEG = 40.0


@dataclass
class RigFit:
    """The fitted rig.

    state:        RigState (identity α, expressions β by name, pose (pitch, yaw, roll) radians).
    translation:  float64 [3] metres, t in P = R S + t: where the head sits in the crop camera's frame (the head
                  frame of shared.conventions, camera at (0, 0, 1) m looking down -z).
    residual_px:  float64 [68] |projected landmark - target| at 512².
    verdict:      "good" (median < 3 px), "rough" (< 8 px) or "failed".
    warnings:     human-readable notes (e.g. an extreme profile).
    shading_error: the mean colour error (0..1 RGB) of the skin's shading when the fit was refined on it
                  (backend.fit.photometric), else None: identity from the landmarks only.
    """

    state: RigState
    translation: np.ndarray
    residual_px: np.ndarray
    verdict: str
    warnings: list[str] = field(default_factory=list)
    shading_error: float | None = None


def euler_derivatives(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """float64 [3, 3, 3]: dR/d(pitch, yaw, roll) of R = Rz(roll) Ry(yaw) Rx(pitch) (shared.conventions)."""
    cx, sx, cy, sy, cz, sz = np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    drx = np.array([[0, 0, 0], [0, -sx, -cx], [0, cx, -sx]])
    dry = np.array([[-sy, 0, cy], [0, 0, 0], [-cy, 0, -sy]])
    drz = np.array([[-sz, -cz, 0], [cz, -sz, 0], [0, 0, 0]])
    return np.stack([rz @ ry @ drx, rz @ dry @ rx, drz @ ry @ rx])


class LandmarkProblem:
    """Residuals and their Jacobian for the parameter vector x = [α (I), β (E), pitch, yaw, roll, t (3)].

    The data rows are ``w_k (u_k - l_k)`` (2N), the prior rows ``sqrt(λ) α`` and ``sqrt(λ) β``; ``free`` picks the
    parameters being fitted, the others stay at ``x0``.
    """

    def __init__(self, rig: MorphableModel, target: np.ndarray, fit_identity: bool, fit_expression: bool,
                 fit_pose: bool, lambda_id: float | None = None, lambda_exp: float | None = None,
                 points: SurfacePoints | None = None, weights: np.ndarray | None = None,
                 response: DetectorResponse | None = None):
        points = points or SurfacePoints.from_vertices(rig.arrays["landmarks68"])
        self.n = len(points.index)
        self.mean = points.of(rig.neutral)  # [N, 3]
        basis = np.concatenate([rig.identity_basis[:, points.index], rig.expression_basis[:, points.index]])
        self.B = np.einsum("nk,mnkc->mnc", points.weight, basis.astype(np.float64))  # [I + E, N, 3]
        if response is not None:  # the points as the detector reports them (backend.fit.response)
            self.mean = self.mean + response.offset
            self.B[:rig.n_identity] += response.delta
        self.B2 = np.ascontiguousarray(self.B.reshape(len(self.B), -1))  # [I + E, 3N]: a shape is one gemv
        self.Bt = np.ascontiguousarray(self.B.transpose(1, 2, 0))  # [N, 3, I + E] for the Jacobian
        self.I, self.E = rig.n_identity, len(rig.expression_names)
        self.camera = crop_camera()
        self.target = target
        if weights is None:
            weights = np.ones(self.n)
            weights[JAW] = JAW_WEIGHT
        self.w = np.asarray(weights, dtype=np.float64)
        lambda_id = LAMBDA_ID if lambda_id is None else lambda_id
        lambda_exp = LAMBDA_EXP if lambda_exp is None else lambda_exp
        self.sqrt_lam = np.concatenate([np.full(self.I, np.sqrt(lambda_id)), np.full(self.E, np.sqrt(lambda_exp))])
        self.free = np.concatenate([np.full(self.I, fit_identity), np.full(self.E, fit_expression),
                                    np.full(3, fit_pose), np.full(3, True)])
        self.x0 = np.zeros(self.I + self.E + 6)

    def full(self, xf: np.ndarray) -> np.ndarray:
        x = self.x0.copy()
        x[self.free] = xf
        return x

    def _forward(self, x: np.ndarray):
        """Unposed points S [N, 3], the rotation R and the posed points R S + t [N, 3] at parameters x."""
        n = self.I + self.E
        S = self.mean + (x[:n] @ self.B2).reshape(-1, 3)  # [N, 3]
        R = euler_to_matrix(*x[n:n + 3])
        return S, R, S @ R.T + x[-3:]

    def project(self, x: np.ndarray) -> np.ndarray:
        """float64 [68, 2] the landmark vertices' pixels at parameters x."""
        return project_points(self.camera, self._forward(x)[2])[0]

    def residuals(self, xf: np.ndarray) -> np.ndarray:
        x = self.full(xf)
        r = ((self.project(x) - self.target) * self.w[:, None]).reshape(-1)
        return np.concatenate([r, (self.sqrt_lam * x[:self.I + self.E])[self.free[:self.I + self.E]]])

    def jacobian(self, xf: np.ndarray) -> np.ndarray:
        x = self.full(xf)
        n = self.I + self.E
        S, R, P = self._forward(x)
        dP = project_points_jacobian(self.camera, P)[2]  # [N, 2, 3] d(u, v)/d(posed head-frame point)
        M = dP @ R  # [68, 2, 3] d(u, v)/d(unposed point)
        J = np.empty((self.n, 2, n + 6))
        J[:, :, :n] = np.matmul(M, self.Bt)  # [N, 2, I + E]
        dR = euler_derivatives(*x[n:n + 3])
        J[:, :, n:n + 3] = np.einsum("kab,rbc,kc->kar", dP, dR, S)
        J[:, :, n + 3:] = dP
        J = (J * self.w[:, None, None]).reshape(2 * self.n, -1)
        prior = np.zeros((n, n + 6))
        prior[np.arange(n), np.arange(n)] = self.sqrt_lam
        keep = self.free[:n]
        return np.concatenate([J, prior[keep]])[:, self.free]


def initial_parameters(rig: MorphableModel, init: RigState | None) -> np.ndarray:
    """The parameter vector x = [α, β, pitch, yaw, roll, t] of ``init`` (zeros without it; t = 0, β clipped to
    [0, 1])."""
    n_exp = len(rig.expression_names)
    x = np.zeros(rig.n_identity + n_exp + 6)
    if init is not None:
        ident = np.asarray(init.identity, dtype=np.float64)[: rig.n_identity]
        x[: len(ident)] = ident
        x[rig.n_identity:rig.n_identity + n_exp] = np.clip(rig.expression_weights(init.expressions), 0.0, 1.0)
        x[rig.n_identity + n_exp:rig.n_identity + n_exp + 3] = init.pose
    return x


def parameter_bounds(rig: MorphableModel) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of x = [α, β, pitch, yaw, roll, t]: α within ±ALPHA_MAX, β in [0, 1], angles within ±π, t free."""
    I, E = rig.n_identity, len(rig.expression_names)
    lo = np.concatenate([np.full(I, -ALPHA_MAX), np.zeros(E), np.full(3, -np.pi), np.full(3, -np.inf)])
    hi = np.concatenate([np.full(I, ALPHA_MAX), np.ones(E), np.full(3, np.pi), np.full(3, np.inf)])
    return lo, hi


def _huber_weights(p: LandmarkProblem, x: np.ndarray) -> np.ndarray:
    """IRLS weights: sqrt of Huber's ψ(e)/e for each point's pixel error e (1 inside ``LOSS_SCALE_PX``)."""
    err = np.linalg.norm(p.project(x) - p.target, axis=1)
    return np.sqrt(np.minimum(1.0, LOSS_SCALE_PX / np.maximum(err, 1e-9)))


def solve_lm(p: LandmarkProblem, lo: np.ndarray, hi: np.ndarray, iters: int, robust: bool) -> np.ndarray:
    """Levenberg-Marquardt from p.x0 over p.free with box bounds (a projected step; parameters at a bound whose
    gradient points outward sit out the step); with ``robust``, Huber IRLS weights are refreshed every iteration.
    Returns the full parameter vector.

    The normal equations are only (I + E + 6)² (~160²), so one iteration costs a few milliseconds; scipy's
    bounded trust-region solver needs an SVD per iteration and many more iterations for the same optimum.
    """
    f = p.free
    lo, hi = lo[f], hi[f]
    base_w = p.w.copy()
    x = np.clip(p.x0[f], lo, hi)
    mu = 1e-3
    for _ in range(iters):
        if robust:
            p.w = base_w * _huber_weights(p, p.full(x))
        r = p.residuals(x)
        cost = float(r @ r)
        J = p.jacobian(x)
        g, H = J.T @ r, J.T @ J
        move = ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))
        Hm, gm = H[np.ix_(move, move)], g[move]
        diag = np.diag(Hm) + 1e-12
        while True:
            step = np.zeros_like(x)
            step[move] = np.linalg.solve(Hm + mu * np.diag(diag), -gm)
            x_new = np.clip(x + step, lo, hi)
            r_new = p.residuals(x_new)
            cost_new = float(r_new @ r_new)
            if cost_new <= cost or mu > 1e8:
                break
            mu *= 4.0
        if cost_new > cost:
            break
        x, mu = x_new, max(mu / 3.0, 1e-9)
        if cost - cost_new <= 1e-7 * cost:
            break
    return p.full(x)


def fit_rig(rig: MorphableModel, landmarks_px: np.ndarray, *, fit_identity: bool = True, fit_expression: bool = True,
            fit_pose: bool = True, init: RigState | None = None, points: SurfacePoints | None = None,
            weights: np.ndarray | None = None, response: DetectorResponse | None = None,
            lambda_id: float | None = None, translation: np.ndarray | None = None) -> RigFit:
    """Fit ``rig`` to landmarks float [N, 2] in crop px (512², corner origin) under the crop camera.

    By default N = 68 iBUG landmarks on the rig's ``landmarks68`` vertices (jaw line at ``JAW_WEIGHT``); pass
    ``points`` (N surface points, e.g. MediaPipe's 468 from :mod:`backend.fit.correspondence`) and optionally
    ``weights`` float [N] to fit other points. ``residual_px`` is per fitted point. ``response`` (for those N
    points, :mod:`backend.fit.response`) fits the points where the detector would report them for a face of
    identity α rather than the rig's surface points; the returned state is the rig's own. ``lambda_id`` (px²)
    overrides ``LAMBDA_ID``, the identity prior's strength.

    Parameters left out (``fit_identity=False``, ...) keep their values from ``init`` (zero / neutral without it).
    ``translation`` (float [3], with an ``init`` already in place, e.g. a refit after the shading refinement) starts
    there and skips the rigid alignment.
    Robustness: iteratively reweighted least squares with Huber weights (``LOSS_SCALE_PX``) on the landmark rows,
    so the Gaussian priors on α and β stay quadratic.
    """
    target = np.asarray(landmarks_px, dtype=np.float64)
    n = 68 if points is None else len(points.index)
    if target.shape != (n, 2) or not np.isfinite(target).all():
        raise FitError("landmarks", f"{n} finite (x, y) points in crop px", f"shape {target.shape}",
                       "pass the 68 iBUG landmarks from detect_landmarks, mapped into the crop")
    if points is None and "landmarks68" not in rig.arrays:
        raise FitError("rig", "a rig with 68 landmark vertices (landmarks68)", rig.name,
                       "convert the rig again with `joker-head fetch-rig ict`")
    x = initial_parameters(rig, init)
    I, E = rig.n_identity, len(rig.expression_names)
    lo, hi = parameter_bounds(rig)

    if translation is None:
        # 1. rigid first (rotation, translation), so the shape modes start from a head in the right place
        rigid = LandmarkProblem(rig, target, False, False, fit_pose, points=points, weights=weights,
                                response=response)
        rigid.x0 = x
        x = solve_lm(rigid, lo, hi, 30, robust=False)
    else:
        x[-3:] = translation
    # 2. everything asked for, Huber-reweighted (a misplaced landmark cannot drag the face)
    p = LandmarkProblem(rig, target, fit_identity, fit_expression, fit_pose, points=points, weights=weights,
                        response=response, lambda_id=lambda_id)
    p.x0 = x
    x = solve_lm(p, lo, hi, 60, robust=True)
    residual = np.linalg.norm(p.project(x) - target, axis=1)
    med = float(np.median(residual))
    verdict = "good" if med < GOOD_PX else "rough" if med < ROUGH_PX else "failed"
    pose = tuple(float(v) for v in x[I + E:I + E + 3])
    warnings = []
    if abs(np.degrees(pose[1])) > PROFILE_YAW_DEG:
        warnings.append(f"the face is turned {abs(np.degrees(pose[1])):.0f} degrees (profile): identity transfer "
                        "weakens; a more frontal photo gives a closer likeness")
    state = RigState(model=_model_name(rig), identity=tuple(float(v) for v in x[:I]),
                     expressions={n: float(v) for n, v in zip(rig.expression_names, x[I:I + E]) if v > 1e-4},
                     pose=pose)
    return RigFit(state, x[-3:].copy(), residual, verdict, warnings)


def posed_vertices(rig: MorphableModel, fit: RigFit) -> np.ndarray:
    """float64 [V, 3] the fitted rig as the crop camera sees it: R S + t (head frame, metres). Render it with
    ``shared.conventions.crop_camera()`` (e.g. ``shared.raster.render_normal_map``) to overlay it on the crop."""
    s = fit.state
    return rig.evaluate(s.identity, s.expressions, s.pose).astype(np.float64) + fit.translation


def project_fit(rig: MorphableModel, fit: RigFit, points: SurfacePoints | None = None) -> np.ndarray:
    """float64 [N, 2] crop px of surface points (default the rig's 68 landmark vertices) on the fitted rig."""
    points = points or SurfacePoints.from_vertices(rig.arrays["landmarks68"])
    uv, _ = project_points(crop_camera(), points.of(posed_vertices(rig, fit)))
    return uv


def _model_name(rig: MorphableModel) -> str:
    name = rig.name.lower()
    return "bfm" if "bfm" in name else "ict"

"""Fit a morphable rig to 68 landmarks in the reference crop: identity, expression, rotation and translation.

Model (head frame of shared.conventions, metres):   P_k = R(pitch, yaw, roll) · S_k(α, β) + t
    S_k = S̄_k + Σ_i α_i B_id[i]_k + Σ_j β_j B_exp[j]_k    for the rig's 68 landmark vertices k
    u_k = project(crop camera, P_k)                          crop camera: shared.conventions.crop_camera()
Energy (robust least squares, float64, scipy's trust-region reflective solver, soft-L1 loss on the pixels):
    Σ_k w_k ρ(|u_k - l_k|²)  +  λ_id |α|²  +  λ_exp |β|²,     β ∈ [0, 1],  α ∈ [-α_max, α_max]
The jaw-line landmarks (0-16) are not fixed points of the face: a detector puts them on the silhouette, which
slides over the surface as the head turns, so they get a lower weight (``JAW_WEIGHT``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.conventions import crop_camera, euler_to_matrix, project_points
from shared.jobs import RigState
from shared.morphable import MorphableModel

from .errors import FitError

JAW_WEIGHT = 0.5  # the silhouette slides: trust the jaw line half as much as the inner points
LAMBDA_ID = 2.0  # px² per unit α² (one standard deviation costs as much as ~1.4 px on one landmark)
LAMBDA_EXP = 0.5
ALPHA_MAX = 5.0
LOSS_SCALE_PX = 3.0  # soft-L1: residuals beyond ~3 px count linearly (a misplaced landmark cannot drag the fit)
GOOD_PX, ROUGH_PX = 3.0, 8.0  # verdict thresholds on the median landmark residual at 512²
PROFILE_YAW_DEG = 50.0  # beyond this the far side of the face is hidden: identity transfer weakens


@dataclass
class RigFit:
    """The fitted rig.

    state:        RigState (identity α, expressions β by name, pose (pitch, yaw, roll) radians).
    translation:  float64 [3] metres, t in P = R S + t: where the head sits in the crop camera's frame (the head
                  frame of shared.conventions, camera at (0, 0, 1) m looking down -z).
    residual_px:  float64 [68] |projected landmark - target| at 512².
    verdict:      "good" (median < 3 px), "rough" (< 8 px) or "failed".
    warnings:     human-readable notes (e.g. an extreme profile).
    """

    state: RigState
    translation: np.ndarray
    residual_px: np.ndarray
    verdict: str
    warnings: list[str] = field(default_factory=list)


class _Problem:
    """The landmark rows of the rig's bases in float64 and the residual function of the parameter vector
    x = [α (I), β (E), pitch, yaw, roll, t (3)]."""

    def __init__(self, rig: MorphableModel, target: np.ndarray, weights: np.ndarray, fit_identity: bool,
                 fit_expression: bool, fit_pose: bool, init: np.ndarray):
        lm = np.asarray(rig.arrays["landmarks68"], dtype=np.int64)
        self.mean = rig.neutral[lm].astype(np.float64)  # [68, 3]
        self.B_id = rig.identity_basis[:, lm].astype(np.float64).reshape(rig.n_identity, -1)  # [I, 204]
        self.B_exp = rig.expression_basis[:, lm].astype(np.float64).reshape(len(rig.expression_names), -1)
        self.I, self.E = len(self.B_id), len(self.B_exp)
        self.cam = crop_camera()
        self.target, self.w = target, weights
        self.free = np.concatenate([np.full(self.I, fit_identity), np.full(self.E, fit_expression),
                                    np.full(3, fit_pose), np.full(3, True)])
        self.x0 = init.copy()

    def full(self, xf: np.ndarray) -> np.ndarray:
        x = self.x0.copy()
        x[self.free] = xf
        return x

    def project(self, x: np.ndarray) -> np.ndarray:
        a, b = x[:self.I], x[self.I:self.I + self.E]
        S = self.mean + (a @ self.B_id + b @ self.B_exp).reshape(-1, 3)
        R = euler_to_matrix(*x[self.I + self.E:self.I + self.E + 3])
        uv, _ = project_points(self.cam, S @ R.T + x[-3:])
        return uv

    def residuals(self, xf: np.ndarray) -> np.ndarray:
        x = self.full(xf)
        r = ((self.project(x) - self.target) * self.w[:, None]).reshape(-1)
        reg = np.concatenate([np.sqrt(LAMBDA_ID) * x[:self.I], np.sqrt(LAMBDA_EXP) * x[self.I:self.I + self.E]])
        return np.concatenate([r, reg[self.free[:self.I + self.E]]])


def _initial(rig: MorphableModel, init: RigState | None) -> np.ndarray:
    n_exp = len(rig.expression_names)
    x = np.zeros(rig.n_identity + n_exp + 6)
    if init is not None:
        ident = np.asarray(init.identity, dtype=np.float64)[: rig.n_identity]
        x[: len(ident)] = ident
        x[rig.n_identity:rig.n_identity + n_exp] = rig.expression_weights(init.expressions)
        x[rig.n_identity + n_exp:rig.n_identity + n_exp + 3] = init.pose
    return x


def fit_rig(rig: MorphableModel, landmarks_px: np.ndarray, *, fit_identity: bool = True, fit_expression: bool = True,
            fit_pose: bool = True, init: RigState | None = None) -> RigFit:
    """Fit ``rig`` to 68 iBUG landmarks float [68, 2] in crop px (512², corner origin) under the crop camera."""
    from scipy.optimize import least_squares

    target = np.asarray(landmarks_px, dtype=np.float64)
    if target.shape != (68, 2) or not np.isfinite(target).all():
        raise FitError("landmarks", "68 finite (x, y) points in crop px", f"shape {target.shape}",
                       "pass the 68 iBUG landmarks from detect_landmarks, mapped into the crop")
    if "landmarks68" not in rig.arrays:
        raise FitError("rig", "a rig with 68 landmark vertices (landmarks68)", rig.name,
                       "convert the rig again with `joker-head fetch-rig ict`")
    w = np.ones(68)
    w[:17] = JAW_WEIGHT
    x0 = _initial(rig, init)
    p = _Problem(rig, target, w, fit_identity, fit_expression, fit_pose, x0)
    I, E = p.I, p.E
    lo = np.concatenate([np.full(I, -ALPHA_MAX), np.zeros(E), np.full(3, -np.pi), np.full(3, -np.inf)])
    hi = np.concatenate([np.full(I, ALPHA_MAX), np.ones(E), np.full(3, np.pi), np.full(3, np.inf)])
    x0[I:I + E] = np.clip(x0[I:I + E], 0.0, 1.0)

    # 1. rigid first (rotation, translation) so the shape modes start from a head in the right place
    rigid = _Problem(rig, target, w, False, False, fit_pose, x0)
    sol = least_squares(rigid.residuals, x0[rigid.free], bounds=(lo[rigid.free], hi[rigid.free]),
                        loss="soft_l1", f_scale=LOSS_SCALE_PX, x_scale="jac", max_nfev=50)
    x0 = rigid.full(sol.x)
    # 2. everything asked for
    p.x0 = x0
    sol = least_squares(p.residuals, x0[p.free], bounds=(lo[p.free], hi[p.free]), loss="soft_l1",
                        f_scale=LOSS_SCALE_PX, x_scale="jac", max_nfev=100)
    x = p.full(sol.x)
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


def _model_name(rig: MorphableModel) -> str:
    name = rig.name.lower()
    return "bfm" if "bfm" in name else "ict"

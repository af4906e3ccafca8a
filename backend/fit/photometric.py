"""Refine a landmark fit on the crop's shading: the rig's skin, lit, against the photo's skin (analysis by synthesis).

Why: MediaPipe's points say little about a face's shape (docs/FIT.md, *Identity through the detector*): through
them the fit recovers 0.2 mm of shape beyond the mean face's. The shading of the skin says much more: how the cheeks,
nose and brow ridge turn toward or away from the light is the surface's normal field.

Model, for the skin vertices k of the rig's face that the crop camera sees (brows, eyes and lips left out, up to
``MAX_SAMPLES`` of them, only the skin-coloured ones counted), in the crop camera of :mod:`backend.fit.rigfit`
(x = [α, β, pitch, yaw, roll, t]):
    colour_k = Σ_j Y_j(n_k) L_j,c       Y: 2nd-order spherical harmonics (9) of the posed normal n_k, L [9, 3] per fit
    E = LANDMARK_WEIGHT Σ_landmarks w ρ(|u - l|) + LAMBDA_ID_PHOTO |α|² + PHOTO_WEIGHT mean_k ρ_c(|colour_k - I(u_k)|)
I: the crop blurred by ``BLUR_PX[round]``, coarse to fine, read at the vertex's pixel u_k. L has albedo × light folded
in: one colour over the skin, any soft light. It is solved in closed form at every step (its derivative is left out:
variable projection), so the light never has to be guessed. ρ, ρ_c: Huber; a highlight or a shadow counts linearly.
The landmarks, at half a percent of their weight, keep the head where the detector put it and turned as it is: the
shading does the shape. Expressions stay at the landmark fit's (the caller fits them again around the new face:
:func:`backend.fit.portrait.fit_landmarks`).

Levenberg-Marquardt (the landmark fit's, :func:`backend.fit.rigfit.solve_lm`) with an analytic Jacobian: the photo
rows' derivative runs through the projection (the image gradient) and the normals (the shading)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Optional

import numpy as np

from shared.conventions import crop_camera, euler_to_matrix, project_points, project_points_jacobian
from shared.morphable import MorphableModel

from .correspondence import SurfacePoints
from .headshot import polyline_distance
from .rigfit import LandmarkProblem, RigFit, euler_derivatives, initial_parameters, parameter_bounds, solve_lm

# Weights in the landmark fit's units (px² per landmark, px² per unit² of α), tuned on calibration renders (seed
# 1000, disjoint from the benchmark's heads) and the real photos' landmark error (docs/FIT.md):
PHOTO_WEIGHT = 1.0e5  # per unit of mean squared colour error of the samples (0..1 RGB)
LANDMARK_WEIGHT = 0.005  # MediaPipe's points at 0.5 % of their weight in the landmark fit: they anchor place and turn
# (2 % / 1 % / 0.3 %: 0.3 / 0.1 / 0.0 mm worse on renders; below 0.5 % the real photos' landmark error nears 3 px)
LAMBDA_ID_PHOTO = 1.0  # identity prior (2: 0.45 mm worse; 0.7: the same)
HUBER_COLOUR = 0.05  # colour error beyond which a sample counts linearly (0..1 RGB)
# Rounds, each with the crop's Gaussian blur (σ, px at 512²), coarse to fine: a wide basin first, then the detail
# (a blur the model does not have biases the fit: at the true face a render's colour error is 0.016 at 1.5 px, 0.006
# unblurred; a fixed 1.5 px: 0.3 mm worse, starting at 0.3 px: stuck in the wrong basin)
BLUR_PX = (3.0, 2.0, 1.5, 1.0, 0.7, 0.4)
WINDOW_MARGIN_PX = 24  # the blurred window reaches this far beyond the projected skin (the fit moves it)
SKIN_CHROMA = 0.03  # a sample whose (r, g) / (r + g + b) is further from the median is not skin
SKIN_BRIGHTNESS = 2.0  # nor one more than 2x brighter or darker than the median (a highlight, a shadow, hair)
MIN_SKIN = 0.3  # below this fraction of skin-coloured samples the face is covered: no refinement
MIN_SAMPLES = 50  # nor with fewer skin points seen (the fit put the face elsewhere, or it is tiny)
COLOURLESS_CHROMA = 0.01  # skin whose median chromaticity is this close to gray's (1/3, 1/3): a photo without colour
MAX_SAMPLES = 1000  # skin vertices per step (a fixed random subset of the visible ones; 1500: same error, +30 % time)
STEPS = 3  # LM steps per round; the Huber and skin weights are refreshed every round
RESAMPLE_ROUNDS = (0, 2, 4)  # rounds that choose the samples again (visibility, skin, the normals' derivative)
FACING_COS = 0.25  # a vertex turned further from the camera is a silhouette sample: left out
DEPTH_SUBSAMPLE = 4  # the depth test's buffer at 1/4 of the crop's resolution (128²): it needs no detail (1/2: the
# same identity error, 0.1 s more per fit)
DEPTH_TOL_M = 0.003  # a vertex more than this behind the depth buffer is hidden (the nose hides a cheek)
# Skin margins around the rig's 68 landmark polylines (metres on the neutral face): painted or hairy features.
MARGIN_BROW_M, MARGIN_EYE_M, MARGIN_LIPS_M = 0.010, 0.008, 0.006


@dataclass
class _Skin:
    """The rig's skin for shading. verts int64 [Vl] local vertices (the face region's skin triangles); tri int64
    [Fl, 3] those triangles in local indices; skin int64 [K] local indices of the vertices that may be sampled;
    B_id float64 [Vl, 3, I] their identity basis; incidence: sparse [Vl, Fl] vertex <- triangle (for summing face
    normals onto vertices)."""

    verts: np.ndarray
    tri: np.ndarray
    skin: np.ndarray
    B_id: np.ndarray
    incidence: Any


_SKIN: "weakref.WeakKeyDictionary[MorphableModel, _Skin]" = weakref.WeakKeyDictionary()


def _skin(rig: MorphableModel) -> _Skin:
    """The rig's skin for shading, built once per rig object."""
    if rig not in _SKIN:
        from scipy.sparse import csr_matrix

        names = [str(n) for n in rig.arrays["material_names"]]
        fm = np.asarray(rig.arrays["face_material"])
        tri = rig.faces[fm == names.index("M_Face")].astype(np.int64)
        tri = tri[rig.region_mask("face")[tri].all(axis=1)]
        verts = np.unique(tri)
        P = rig.neutral[verts].astype(np.float64)
        lm = rig.neutral[np.asarray(rig.arrays["landmarks68"])].astype(np.float64)
        ring = lambda idx: lm[list(idx) + [idx[0]]]  # noqa: E731  (a closed contour)
        hidden = ((polyline_distance(P, lm[17:22]) < MARGIN_BROW_M) | (polyline_distance(P, lm[22:27]) < MARGIN_BROW_M)
                  | (polyline_distance(P, ring(range(36, 42))) < MARGIN_EYE_M)
                  | (polyline_distance(P, ring(range(42, 48))) < MARGIN_EYE_M)
                  | (polyline_distance(P, ring(range(48, 60))) < MARGIN_LIPS_M))
        local = -np.ones(rig.n_vertices, dtype=np.int64)
        local[verts] = np.arange(len(verts))
        tri = local[tri]
        F = len(tri)
        incidence = csr_matrix((np.ones(3 * F), (tri.reshape(-1), np.repeat(np.arange(F), 3))), shape=(len(verts), F))
        B_id = rig.identity_basis[:, verts].astype(np.float64).transpose(1, 2, 0)
        _SKIN[rig] = _Skin(verts, tri, np.flatnonzero(~hidden), B_id, incidence)
    return _SKIN[rig]


class _Blurred:
    """The crop blurred by ``sigma`` px, and its gradient, over the window ``box`` (x0, y0, x1, y1 px) that holds the
    face: blurring only there is 5x faster than the whole crop (the window's edge is the image's edge to the blur).
    Read with :meth:`colour` and :meth:`gradient` at crop px."""

    def __init__(self, image: np.ndarray, sigma: float, box: tuple[int, int, int, int]):
        from scipy.ndimage import gaussian_filter

        x0, y0, x1, y1 = box
        eight_bit = image.dtype == np.uint8  # float32 loses nothing of 8 bits and blurs twice as fast
        img = np.asarray(image[y0:y1, x0:x1], dtype=np.float32 if eight_bit else np.float64) / (255.0 if eight_bit else 1.0)
        if sigma > 0:
            img = gaussian_filter(img, sigma=(sigma, sigma, 0), mode="nearest")
        img = img.astype(np.float64)  # the solver's dtype
        gy, gx = np.gradient(img, axis=(0, 1))
        self.img, self.grad = img, np.stack([gx, gy], axis=-1)  # [h, w, 3], [h, w, 3, 2] (d/dx, d/dy per pixel)
        self.origin = np.array([x0, y0], dtype=np.float64)

    def colour(self, uv: np.ndarray) -> np.ndarray:
        """float64 [N, 3] at crop px uv [N, 2] (outside the window: its edge)."""
        return _bilinear(self.img, uv - self.origin)

    def gradient(self, uv: np.ndarray) -> np.ndarray:
        """float64 [N, 3, 2] d colour / d(x, y) at crop px uv [N, 2]."""
        return _bilinear(self.grad, uv - self.origin)


def _bilinear(img: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """img [H, W, ...] read at uv [N, 2] (px, corner origin: pixel centres at +0.5) -> [N, ...]."""
    H, W = img.shape[:2]
    x = np.clip(uv[:, 0] - 0.5, 0, W - 1.001)
    y = np.clip(uv[:, 1] - 0.5, 0, H - 1.001)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    shape = (-1,) + (1,) * (img.ndim - 2)
    fx, fy = fx.reshape(shape), fy.reshape(shape)
    return (img[y0, x0] * (1 - fx) * (1 - fy) + img[y0, x0 + 1] * fx * (1 - fy)
            + img[y0 + 1, x0] * (1 - fx) * fy + img[y0 + 1, x0 + 1] * fx * fy)


def _sh9(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2nd-order spherical harmonics (unnormalised) of unit normals [N, 3]: Y [N, 9] and dY/dn [N, 9, 3]."""
    x, y, z = n[:, 0], n[:, 1], n[:, 2]
    one, zero = np.ones_like(x), np.zeros_like(x)
    Y = np.stack([one, x, y, z, x * y, x * z, y * z, x * x - y * y, 3 * z * z - 1], axis=1)
    dY = np.stack([np.stack(r, axis=1) for r in (
        (zero, zero, zero), (one, zero, zero), (zero, one, zero), (zero, zero, one), (y, x, zero), (z, zero, x),
        (zero, z, y), (2 * x, -2 * y, zero), (zero, zero, 6 * z))], axis=1)
    return Y, dY


def _skew(v: np.ndarray) -> np.ndarray:
    """[N, 3, 3] cross-product matrices of v [N, 3]: _skew(v) @ w == np.cross(v, w)."""
    out = np.zeros(v.shape + (3,))
    out[:, 0, 1], out[:, 0, 2], out[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    out[:, 1, 0], out[:, 2, 0], out[:, 2, 1] = v[:, 2], -v[:, 1], v[:, 0]
    return out


def _unit_and_differential(v: np.ndarray, dv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """v / |v| and its differential for v [N, 3], dv [N, 3, P]."""
    length = np.maximum(np.linalg.norm(v, axis=1), 1e-20)
    u = v / length[:, None]
    du = (dv - u[:, :, None] * np.einsum("nc,ncp->np", u, dv)[:, None]) / length[:, None, None]
    return u, du


class _PhotoProblem(LandmarkProblem):
    """The landmark fit's problem (scaled by LANDMARK_WEIGHT) plus the shading rows of the sampled skin vertices."""

    def __init__(self, rig: MorphableModel, target: np.ndarray, points: SurfacePoints, weights: np.ndarray,
                 image: np.ndarray, beta: np.ndarray, fit_pose: bool = True):
        super().__init__(rig, target, True, False, fit_pose, lambda_id=LAMBDA_ID_PHOTO / LANDMARK_WEIGHT,
                         points=points, weights=weights)
        self.skin = _skin(rig)
        sk = self.skin
        self.S_mean = (rig.neutral[sk.verts].astype(np.float64)
                       + np.einsum("e,evc->vc", beta, rig.expression_basis[:, sk.verts].astype(np.float64)))
        self.image = image
        self.photo: Optional[_Blurred] = None  # set by blur()
        self._memo: Optional[tuple] = None  # _forward_shading's last
        self.samples = self.around = self.at_samples = sk.skin[:0]  # set by choose_samples
        self.tri_around, self.A = sk.tri[:0], None
        self.sample_w = np.ones(0)
        self.is_skin = np.ones(0, dtype=bool)
        self.colourless = False
        self.dn_alpha = self.B_around = self.B_samples = np.zeros((0, 3, self.I))
        self.sqrt_photo = 0.0

    # --- the posed skin and its derivatives ------------------------------------------------------------------
    def _posed(self, x: np.ndarray, vidx: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Local vertices ``vidx`` (default all): unposed S [n, 3], posed V = R S + t [n, 3], and R [3, 3]."""
        n_sh = self.I + self.E
        alpha, pose, t = x[:self.I], x[n_sh:n_sh + 3], x[-3:]
        if vidx is None:
            S = self.S_mean + self.skin.B_id @ alpha
        else:
            B = self.B_around if vidx is self.around else self.skin.B_id[vidx]  # the gather is cached per round
            S = self.S_mean[vidx] + B @ alpha
        R = euler_to_matrix(*pose)
        return S, S @ R.T + t, R

    def _normals(self, V: np.ndarray, dV: Optional[np.ndarray], rows: np.ndarray, tri: np.ndarray, A):
        """Unit vertex normals at ``rows`` (the sum of the adjacent faces' unit normals, as
        shared.morphable.vertex_normals) over triangles ``tri`` [F, 3] into V (the faces around ``rows``), A the
        sparse [rows, F] incidence; with dV [len(V), 3, P] also their differential [len(rows), 3, P]."""
        a, b, c = V[tri[:, 0]], V[tri[:, 1]], V[tri[:, 2]]
        m = np.cross(b - a, c - a)
        if dV is None:
            u = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-20)
            n = A @ u
            return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12), None
        da = dV[tri[:, 0]]
        P = dV.shape[2]
        # d(e1 × e2) = de1 × e2 + e1 × de2 = [e1]× de2 - [e2]× de1: batched 3x3 products (np.cross over an axis
        # of [F, 3, P] arrays copies them and is 3x slower)
        dm = np.matmul(_skew(b - a), dV[tri[:, 2]] - da) - np.matmul(_skew(c - a), dV[tri[:, 1]] - da)
        u, du = _unit_and_differential(m, dm)
        n_raw = A @ u
        dn_raw = (A @ du.reshape(len(tri), -1)).reshape(len(n_raw), 3, P)
        return _unit_and_differential(n_raw, dn_raw)

    def _forward_shading(self, x: np.ndarray) -> tuple:
        """The model's colours at x and what their derivative needs: (S, R, unposed normals, uv, d uv / d V, dY, L,
        residual). Kept for the last x (and the same photo, samples and weights): Levenberg-Marquardt asks for the
        residual at a point it has just tried, then the Jacobian there."""
        key = (x.tobytes(), self.sample_w.tobytes())
        memo = self._memo
        if memo is not None and memo[0] == key and memo[1] is self.photo and memo[2] is self.samples:
            return memo[3]
        S, V, R = self._posed(x, self.around)
        n0, _ = self._normals(S, None, self.at_samples, self.tri_around, self.A)  # unposed: rotate after
        uv, _, duv_dV = project_points_jacobian(self.camera, V[self.at_samples])
        colour = self.photo.colour(uv)
        Y, dY = _sh9(n0 @ R.T)
        w = self.sample_w[:, None] ** 2
        L = np.linalg.solve((Y * w).T @ Y + 1e-6 * np.eye(9), (Y * w).T @ colour)
        out = (S, R, n0, uv, duv_dV, dY, L, Y @ L - colour)
        self._memo = (key, self.photo, self.samples, out)
        return out

    def shading(self, x: np.ndarray, with_jacobian: bool = False):
        """Per sample: residual colour [K, 3] (model - photo), the light L [9, 3] and, with_jacobian, d residual /
        d(α, pose, t) [K, 3, I + 6] with L held fixed. The normals' derivative by α is the one taken when the
        samples were chosen (``dn_alpha``): it changes little over a round's few steps and costs 10x a step."""
        S, R, n0, uv, duv_dV, dY, L, res = self._forward_shading(x)
        if not with_jacobian:
            return res, L, None
        pose = x[self.I + self.E:self.I + self.E + 3]
        dR = euler_derivatives(*pose)  # [3, 3, 3]
        Ss = S[self.at_samples]
        dn = np.concatenate([np.matmul(R, self.dn_alpha), np.einsum("rab,kb->kar", dR, n0),
                             np.zeros((len(n0), 3, 3))], axis=2)  # [K, 3, I + 6]
        dV = np.concatenate([np.matmul(R, self.B_samples), np.einsum("rab,kb->kar", dR, Ss),
                             np.broadcast_to(np.eye(3), (len(Ss), 3, 3))], axis=2)
        d_model = np.matmul(np.einsum("kjd,jc->kcd", dY, L), dn)  # d colour / d normal, then the normal's chain
        grad = self.photo.gradient(uv)  # [K, 3, 2] image gradient
        d_photo = np.matmul(np.matmul(grad, duv_dV), dV)
        return res, L, d_model - d_photo

    # --- the composite problem for rigfit.solve_lm ----------------------------------------------------------------
    def residuals(self, xf: np.ndarray) -> np.ndarray:
        x = self.full(xf)
        res, _, _ = self.shading(x)
        photo = (res * self.sample_w[:, None]).reshape(-1) * self.sqrt_photo
        return np.concatenate([super().residuals(xf), photo])

    def jacobian(self, xf: np.ndarray) -> np.ndarray:
        x = self.full(xf)
        _, _, J = self.shading(x, with_jacobian=True)  # columns α, pose, t: the free ones of x among them
        J = J[:, :, self.free[np.r_[:self.I, self.I + self.E:len(x)]]]
        photo = (J * (self.sample_w * self.sqrt_photo)[:, None, None]).reshape(-1, J.shape[2])
        return np.concatenate([super().jacobian(xf), photo])

    def blur(self, x: np.ndarray, sigma: float) -> None:
        """Read the crop blurred by ``sigma`` px from now on, over a window around the skin posed at ``x``."""
        _, V, _ = self._posed(x)
        uv, _ = project_points(self.camera, V)
        H, W = self.image.shape[:2]
        lo = np.clip(np.floor(uv.min(axis=0)) - WINDOW_MARGIN_PX, 0, [W, H]).astype(int)
        hi = np.clip(np.ceil(uv.max(axis=0)) + WINDOW_MARGIN_PX, lo + 2, [W, H]).astype(int)
        self.photo = _Blurred(self.image, sigma, (lo[0], lo[1], hi[0], hi[1]))

    def choose_samples(self, x: np.ndarray, rng: np.random.Generator) -> int:
        """Visible, camera-facing skin vertices inside the crop (at most MAX_SAMPLES); returns how many were visible."""
        import torch

        from backend.render.raster import rasterize

        _, rig_V, _ = self._posed(x)
        cam = self.camera
        sk = self.skin
        frag = rasterize(torch.from_numpy(rig_V), torch.from_numpy(sk.tri), [crop_camera(cam.width // DEPTH_SUBSAMPLE)])
        depth = frag.depth[0].numpy()
        cand = sk.skin
        n, _ = self._normals(rig_V, None, cand, sk.tri, sk.incidence[cand])
        uv, z = project_points(cam, rig_V[cand])
        view = cam.c2w[:3, 3] - rig_V[cand]
        facing = (n * view).sum(axis=1) / np.linalg.norm(view, axis=1) > FACING_COS
        inside = (uv > 2).all(axis=1) & (uv < np.array([cam.width, cam.height]) - 2).all(axis=1)
        k = DEPTH_SUBSAMPLE
        ij = np.clip(np.floor(uv / k).astype(int), 0, [cam.width // k - 1, cam.height // k - 1])
        zbuf = depth[ij[:, 1], ij[:, 0]]
        ok = facing & inside & (zbuf > 0) & (z - zbuf < DEPTH_TOL_M)
        samples = cand[ok]
        if len(samples) > MAX_SAMPLES:
            samples = np.sort(rng.choice(samples, MAX_SAMPLES, replace=False))
        # the triangles around the samples and their vertices: all a step needs
        A = sk.incidence[samples]
        faces = np.unique(A.indices)
        tri = sk.tri[faces]
        self.around, local = np.unique(tri, return_inverse=True)
        self.tri_around = local.reshape(-1, 3)
        self.A = A[:, faces]
        self.at_samples = np.searchsorted(self.around, samples)
        self.samples = samples
        self.B_around = sk.B_id[self.around]
        self.B_samples = self.B_around[self.at_samples]
        S, _, _ = self._posed(x, self.around)  # the unposed normals' derivative by α, for this round
        _, self.dn_alpha = self._normals(S, self.B_around, self.at_samples, self.tri_around, self.A)
        self.sqrt_photo = float(np.sqrt(PHOTO_WEIGHT / LANDMARK_WEIGHT / max(len(samples), 1)))
        return int(ok.sum())

    def reweigh(self, x: np.ndarray) -> float:
        """Huber weights for the skin-coloured samples (sqrt of ψ(e)/e; 0 for the others); returns their mean
        colour error."""
        self.sample_w = self.is_skin.astype(np.float64)
        res, _, _ = self.shading(x)
        e = np.linalg.norm(res, axis=1)
        self.sample_w = self.is_skin * np.sqrt(np.minimum(1.0, HUBER_COLOUR / np.maximum(e, 1e-12)))
        return float(e[self.is_skin].mean()) if self.is_skin.any() else float("nan")

    def mark_skin(self, x: np.ndarray) -> float:
        """Which samples show skin: chromaticity within SKIN_CHROMA of the samples' median and brightness within
        SKIN_BRIGHTNESS of it (hair, a cap, glasses, a beard, the background are left out). Returns the fraction."""
        _, V, _ = self._posed(x, self.around)
        uv, _ = project_points(self.camera, V[self.at_samples])
        colour = self.photo.colour(uv)
        total = np.maximum(colour.sum(axis=1), 1e-6)
        chroma = colour[:, :2] / total[:, None]
        centre = np.median(chroma, axis=0)
        self.colourless = bool(np.abs(centre - 1.0 / 3.0).max() < COLOURLESS_CHROMA)  # the "skin" is gray
        near = np.linalg.norm(chroma - centre, axis=1) < SKIN_CHROMA
        ratio = total / max(float(np.median(total)), 1e-6)
        self.is_skin = near & (ratio > 1.0 / SKIN_BRIGHTNESS) & (ratio < SKIN_BRIGHTNESS)
        return float(self.is_skin.mean()) if len(self.is_skin) else 0.0


class Shading(NamedTuple):
    """What :func:`refine_on_shading` made of a landmark fit.

    fit:          the refined fit (identity, pose and translation; expressions kept; residual_px and verdict are
                  the input's, for the caller to recompute), or the input fit when ``skipped``;
    colour_error: the skin samples' mean colour error (0..1 RGB) after it; nan when skipped;
    skipped:      why nothing was refined (a sentence for a warning), else None.
    """

    fit: RigFit
    colour_error: float
    skipped: Optional[str]


def refine_on_shading(rig: MorphableModel, image: np.ndarray, fit: RigFit, mesh: np.ndarray,
                      points: SurfacePoints, weights: np.ndarray, seed: int = 0, fit_pose: bool = True) -> Shading:
    """Refine ``fit`` (the landmark fit to MediaPipe's points ``mesh`` [N, 2] on ``points`` with ``weights``) on the
    shading of the crop ``image`` (uint8 or float [512, 512, 3]). For rigs laid out as ICT is (an ``M_Face``
    material and a ``face`` region). Skipped when too little skin is seen or the photo has no colour to tell skin
    from hair by. ``fit_pose=False`` holds the rotation at the fit's (the caller's); the translation is refined."""
    state = fit.state
    I, E = rig.n_identity, len(rig.expression_names)
    x = initial_parameters(rig, state)
    x[-3:] = fit.translation
    lo, hi = parameter_bounds(rig)
    p = _PhotoProblem(rig, np.asarray(mesh, dtype=np.float64), points, weights, image, x[I:I + E], fit_pose)
    rng = np.random.default_rng(seed)
    landmark_w = p.w.copy()
    colour_error = float("nan")
    for r in range(len(BLUR_PX)):
        if r == 0 or BLUR_PX[r] != BLUR_PX[r - 1]:
            p.blur(x, BLUR_PX[r])
        if r in RESAMPLE_ROUNDS:
            seen = p.choose_samples(x, rng)
            skin = p.mark_skin(x) if seen >= MIN_SAMPLES else 0.0
            if p.colourless or skin < MIN_SKIN:
                if r == 0:
                    why = ("the photo has no colour to tell skin from hair by" if p.colourless else
                           f"too little skin seen ({seen} points, {100 * skin:.0f} % skin-coloured)")
                    return Shading(fit, float("nan"), why)
                break  # keep what the rounds so far found
        p.reweigh(x)
        p.x0, p.w = x, landmark_w.copy()  # solve_lm multiplies the landmarks' Huber weights into p.w: start afresh
        x = solve_lm(p, lo, hi, STEPS, robust=True)
        colour_error = p.reweigh(x)
    refined = replace(state, identity=tuple(float(v) for v in x[:I]),
                      pose=tuple(float(v) for v in x[I + E:I + E + 3]))
    return Shading(RigFit(refined, x[-3:].copy(), fit.residual_px, fit.verdict, list(fit.warnings)), colour_error,
                   None)

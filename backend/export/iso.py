"""Choose the density iso-level from what the volume renderer shows.

The reference NeRF renders with a step of 1.732·2·0.25/200 Joker units (about 3.6 mm): a ray stops at its *median
depth*, where the accumulated optical depth sum(sigma·delta) reaches ln 2 (transmittance 1/2), and a pixel is
opaque when its opacity exceeds 1/2. The mesh should show the same thing: along every ray the first crossing of the
iso-level should sit at the median depth, and the rays that cross it should be the opaque ones.

We score candidate levels L on axis-aligned (orthographic) rays through the density grid from all six sides: among
the levels that miss at most 2 % of the frontal rays (no holes where the render shows a head), we take the one whose
first crossing d_L has the smallest median gap |d_L - d_med| over *frontal* rays (those meeting the surface within
~25° of its normal; oblique rays gather optical depth faster and stop further out). A coarse log-spaced search, then
a fine one. The choice depends on the field's geometry, not on its density scale, so no hand tuning is needed;
``ExportConfig.iso`` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from shared.conventions import NERF_BOUND_RADIUS_M

RENDER_STEP_M = 1.732 * 2.0 * NERF_BOUND_RADIUS_M / 200.0  # the reference renderer's ray-marching step, ~3.6 mm
MIN_ALPHA = 0.01  # the renderer's alpha threshold: a sample with less opacity per step is skipped
LN2 = float(np.log(2.0))


@dataclass
class IsoChoice:
    level: float  # sigma at the surface, per metre
    error: float  # median depth gap at that level, in grid cells (0 = the renderer's surface)
    missed: float  # fraction of frontal rays the surface misses
    opaque_rays: int  # rays with opacity > 1/2
    frontal_rays: int  # opaque rays within acos(min_cos) of the surface normal, which set the depth


def _rays(sigma: np.ndarray, stride: int) -> list[tuple[int, bool, np.ndarray]]:
    """The grid as rays along ±x, ±y, ±z: six (axis, reversed, float32 [n_rays, R]) bundles, front to back."""
    out = []
    for axis in range(3):
        s = np.moveaxis(sigma, axis, -1)[::stride, ::stride].reshape(-1, sigma.shape[axis])
        out += [(axis, False, s), (axis, True, s[:, ::-1])]
    return out


def _frontal(sigma: np.ndarray, axis: int, reverse: bool, stride: int, depth: np.ndarray,
             min_cos: float, where: Optional[np.ndarray] = None) -> np.ndarray:
    """Rays meeting the surface within acos(min_cos) of its normal (the density gradient at the median depth).

    Oblique rays collect optical depth faster, so their median depth sits outside the surface a frontal view shows;
    only near-frontal rays measure where the renderer puts the surface. Rays whose median depth falls outside
    ``where`` (bool [R, R, R], optional) do not count either. bool [n_rays]."""
    R = sigma.shape[0]
    m = np.moveaxis(np.arange(R)[::stride], 0, 0)
    a, b = np.meshgrid(m, m, indexing="ij")
    ok = np.isfinite(depth)
    k = np.clip(np.round(np.where(ok, depth, 0.0)).astype(np.int64), 1, R - 2)
    k = R - 1 - k if reverse else k
    idx = [None, None, None]
    others = [d for d in range(3) if d != axis]
    idx[axis], idx[others[0]], idx[others[1]] = k, np.clip(a.ravel(), 1, R - 2), np.clip(b.ravel(), 1, R - 2)
    grad = []
    for d in range(3):
        hi, lo = list(idx), list(idx)
        hi[d], lo[d] = idx[d] + 1, idx[d] - 1
        grad.append(sigma[tuple(hi)].astype(np.float64) - sigma[tuple(lo)])
    grad = np.stack(grad, axis=1)
    cos = np.abs(grad[:, axis]) / np.maximum(np.linalg.norm(grad, axis=1), 1e-30)
    counts = ok & (cos >= min_cos)
    return counts if where is None else counts & where[tuple(idx)]


def _median_depth(rays: np.ndarray, h: float) -> np.ndarray:
    """Fractional sample index where the optical depth reaches ln 2 (inf for rays with opacity <= 1/2). [n_rays]

    Each sample's density fills the cell centred on it, so the optical depth after sample k is reached at k + 1/2.
    """
    tau = np.cumsum(rays * h, axis=1)  # optical depth at k + 1/2
    opaque = tau[:, -1] > LN2
    k = np.argmax(tau > LN2, axis=1)  # first sample past ln 2
    r = np.arange(len(rays))
    before = np.where(k > 0, tau[r, np.maximum(k - 1, 0)], 0.0)
    frac = (LN2 - before) / np.maximum(tau[r, k] - before, 1e-12)
    return np.where(opaque, k - 0.5 + frac, np.inf)


def _first_crossings(log_rays: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Fractional index of the first crossing of each log-level along each ray: float [n_levels, n_rays] (inf: miss).

    The running maximum is non-decreasing per ray, so offsetting each ray by a large constant makes the whole array
    sorted and one ``searchsorted`` answers every (level, ray) pair.
    """
    n, R = log_rays.shape
    run = np.maximum.accumulate(log_rays, axis=1)
    span = float(run.max() - run.min()) + 1.0
    offset = (np.arange(n) * span)[:, None]
    flat = (run - run.min() + offset).ravel()
    q = (levels[:, None] - run.min() + offset[:, 0][None, :])  # [L, n]
    pos = np.searchsorted(flat, q.ravel(), side="right").reshape(q.shape) - np.arange(n)[None, :] * R
    hit = pos < R
    k = np.clip(pos, 1, R - 1)
    r = np.broadcast_to(np.arange(n), k.shape)
    a, b = log_rays[r, k - 1], log_rays[r, k]
    frac = np.clip((levels[:, None] - a) / np.maximum(b - a, 1e-12), 0.0, 1.0)
    d = np.where(pos == 0, 0.0, k - 1 + frac)
    return np.where(hit, d, np.inf)


def choose_iso_level(sigma: np.ndarray, spacing: float, n_levels: int = 24, min_cos: float = 0.9,
                     max_missed: float = 0.02, where: Optional[np.ndarray] = None) -> IsoChoice:
    """The iso-level (per metre) whose surface sits where the renderer's median depth does, without holes.

    sigma: float32 [R, R, R] densities per metre; spacing: grid spacing h in metres. where: optional bool
    [R, R, R], the region whose surface counts (with a completion: where the field has a say, not the debris the
    rig replaces); rays whose median depth lies elsewhere are ignored.
    """
    stride = max(1, sigma.shape[0] // 128)  # 128² rays per side are plenty for one number
    bundles = _rays(sigma, stride)
    d_med = [_median_depth(r, spacing) for _, _, r in bundles]
    frontal = [_frontal(sigma, a, rev, stride, d, min_cos, where) for (a, rev, _), d in zip(bundles, d_med)]
    opaque = int(sum(np.isfinite(d).sum() for d in d_med))
    lo = -np.log1p(-MIN_ALPHA) / RENDER_STEP_M  # below this the renderer skips the sample
    hi = float(sigma.max())
    if opaque == 0 or hi <= lo:
        return IsoChoice(level=float("nan"), error=float("nan"), missed=1.0, opaque_rays=opaque, frontal_rays=0)
    floor = np.log(lo * 1e-3)
    log_rays = [np.log(np.maximum(r, np.exp(floor))) for _, _, r in bundles]
    levels = np.linspace(np.log(lo), np.log(hi), n_levels)
    for _ in range(2):  # coarse, then fine around the best
        gap, missed = _agreement(log_rays, d_med, frontal, levels)
        score = np.where(missed <= max_missed, np.abs(gap), np.inf)
        if not np.isfinite(score).any():  # every level leaves holes: take the one with the fewest
            score = missed
        i = int(np.argmin(score))
        best = (levels[i], gap[i], missed[i])
        levels = np.linspace(levels[max(i - 1, 0)], levels[min(i + 1, len(levels) - 1)], n_levels)
    return IsoChoice(level=float(np.exp(best[0])), error=float(best[1]), missed=float(best[2]), opaque_rays=opaque,
                     frontal_rays=int(sum(f.sum() for f in frontal)))


def _agreement(log_rays: list[np.ndarray], d_med: list[np.ndarray], frontal: list[np.ndarray],
               levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per level: the median signed gap (cells) between first crossing and median depth over frontal rays, and
    the fraction of frontal rays the level misses (holes; silhouette rims are not frontal, so they do not count).
    Two float [n_levels] arrays."""
    gaps = [np.empty((len(levels), 0))]
    for lr, dm, fr in zip(log_rays, d_med, frontal):
        if fr.any():  # a side that sees no surface head-on has no say
            gaps.append(_first_crossings(lr[fr], levels) - dm[fr][None])  # [L, n_frontal]
    g = np.concatenate(gaps, axis=1)
    if not g.shape[1]:  # no frontal rays at all (a tiny or wispy field): every level is equally uninformed
        return np.full(len(levels), np.inf), np.ones(len(levels))
    missed = (~np.isfinite(g)).mean(axis=1)
    with np.errstate(invalid="ignore"):
        med = np.median(np.where(np.isfinite(g), g, np.inf), axis=1)  # a miss counts as "too deep"
    return np.where(np.isfinite(med), med, np.inf), missed

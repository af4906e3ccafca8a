"""Sparse density sampling: the fine grid only where the surface can be.

Sampling a NeRF at 256³ on a CPU is most of an export (16.7 M queries, ~45 s); yet marching cubes, the iso-level
choice and the completion's blend only need exact densities near the iso-surface. So:

1. the field is sampled on a coarse sub-grid (every ``stride``-th fine sample, about 64³, ~6.5 mm apart);
2. the coarse log-density is interpolated trilinearly to the fine grid, and the iso-level is chosen on that;
3. coarse cells whose eight corners' densities reach into [L / OUTSIDE_FACTOR, L · INSIDE_FACTOR] (and, with a completion,
   where the field has a say at all: blend weight w > 0) are marked, dilated by ``DILATE_CELLS`` coarse cells, and
   their fine samples are queried from the field;
4. the level is chosen again on the mixed grid; if it left the band the previous round refined, the band around
   the new level is refined too (at most ``MAX_ROUNDS`` rounds).

Elsewhere the fine grid holds the interpolated coarse densities: far outside the surface (below L / OUTSIDE_FACTOR) or
inside it (above L · INSIDE_FACTOR) at every corner, and a coarse cell away from any cell that is not, only their side of the level matters,
and where w = 0 the completion uses the rig's distance alone. Sparse and dense sampling give the same mesh within a
fraction of a cell on the test fields (tests/test_export_sparse.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from scipy import ndimage

from backend.export.grid import Grid, Progress, _field_device, check_finite, linear_interpolation, query, upsample

COARSE_SPACING_M = 0.0066  # the coarse sub-grid's spacing (4 cells at 256³): below a head's thinnest parts' reach
OUTSIDE_FACTOR = 30.0  # a cell is refined when a corner's density is above L / this (its surface can be near) ...
INSIDE_FACTOR = 3.0  # ... and a corner's density is below L · this (not deep inside: a NeRF saturates there)
DILATE_CELLS = 1  # refined cells are grown by this many coarse cells (thin features between the corners)
MAX_ROUNDS = 3  # level choices on the mixed grid before the sampling stops refining
FLOOR = 1e-6  # per metre: densities below this are empty space (finite in log space)

ChooseLevel = Callable[[np.ndarray], tuple[float, dict[str, Any]]]


@dataclass
class SparseSample:
    sigma: np.ndarray  # float32 [R, R, R] per metre: the field's where refined, interpolated elsewhere
    level: float  # the iso-level chosen on it, per metre
    level_info: dict[str, Any]  # the level choice's summary (iso_source, iso_error, ...)
    info: dict[str, Any]  # sample_points, sample_fraction, sample_rounds, sample_stride


def stride_for(grid: Grid) -> int:
    """Fine samples per coarse cell: ~COARSE_SPACING_M apart; 1 (dense) for grids already that coarse."""
    return max(1, int(round(COARSE_SPACING_M / grid.spacing)))


def coarse_indices(resolution: int, stride: int) -> np.ndarray:
    """Fine indices of the coarse samples: 0, s, 2s, ... and always the last one (R - 1). int [Rc]."""
    return np.unique(np.minimum(np.arange(0, resolution - 1 + stride, stride), resolution - 1))


def sample_sparse(field: Any, grid: Grid, chunk: int, choose_level: ChooseLevel,
                  need: Optional[np.ndarray] = None, progress: Progress = None) -> SparseSample:
    """Sample ``field``'s density sparsely on ``grid`` and choose its iso-level (see the module docstring).

    choose_level: sigma float32 [R, R, R] -> (level per metre, summary), e.g. the pipeline's automatic choice or a
    fixed override. need: optional bool [R, R, R], False where the field's density will not be used (the
    completion's w = 0); refinement stays inside it."""
    R = grid.resolution
    s = stride_for(grid)
    device = _field_device(field)
    ci = coarse_indices(R, s)
    ax = grid.axis()
    coarse = _sample_points(field, ax[ci], chunk, device).reshape(len(ci), len(ci), len(ci))
    check_finite(coarse)
    log_c = np.log(np.maximum(coarse, FLOOR), dtype=np.float32)
    m = linear_interpolation(ci.astype(np.float32), np.arange(R, dtype=np.float32))
    sigma = np.exp(upsample(log_c, m))
    sigma[np.ix_(ci, ci, ci)] = coarse  # exact where sampled
    if s == 1:
        level, level_info = choose_level(sigma)
        return SparseSample(sigma, level, level_info, {"sample_points": int(coarse.size), "sample_fraction": 1.0,
                                                       "sample_rounds": 0, "sample_stride": 1})
    # per coarse cell: the lowest and highest log-density of its 8 corners
    lo = np.minimum.reduce([log_c[a:len(ci) - 1 + a, b:len(ci) - 1 + b, c:len(ci) - 1 + c]
                            for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    hi = np.maximum.reduce([log_c[a:len(ci) - 1 + a, b:len(ci) - 1 + b, c:len(ci) - 1 + c]
                            for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    member = _membership(R, ci)  # float32 [R, Rc - 1]: fine sample i lies in coarse cell c
    allowed = None
    if need is not None:  # a cell is needed when any of its fine samples is
        allowed = upsample(need.astype(np.float32), member.T) > 0
    done = np.zeros((R, R, R), bool)
    done[np.ix_(ci, ci, ci)] = True
    refined = np.zeros_like(lo, bool)
    points, rounds = int(coarse.size), 0
    level, level_info = choose_level(sigma)
    for rounds in range(1, MAX_ROUNDS + 1):
        band = np.log(np.float32(level)) + np.log(np.array([1.0 / OUTSIDE_FACTOR, INSIDE_FACTOR], np.float32))
        cells = (hi >= band[0]) & (lo <= band[1])
        cells = ndimage.binary_dilation(cells, iterations=DILATE_CELLS)
        if allowed is not None:
            cells &= allowed
        new = cells & ~refined
        if not new.any():
            break
        refined |= new
        todo = upsample(new.astype(np.float32), member) > 0  # every fine sample of a new cell, faces included
        todo &= ~done
        idx = np.argwhere(todo)
        values = _sample_points(field, None, chunk, device, ax[idx], progress)
        check_finite(values)
        sigma[todo] = values
        done |= todo
        points += len(idx)
        del todo, idx, values
        level, level_info = choose_level(sigma)
        inside = np.log(level) >= band[0] + np.log(2.0) and np.log(level) <= band[1] - np.log(2.0)
        if inside:
            break
    return SparseSample(np.maximum(sigma, 0.0), level, level_info,
                        {"sample_points": points, "sample_fraction": round(points / R ** 3, 4),
                         "sample_rounds": rounds, "sample_stride": s})


def _membership(resolution: int, ci: np.ndarray) -> np.ndarray:
    """float32 [R, Rc - 1]: 1 where fine sample i lies in coarse cell c (samples on a coarse plane lie in both
    cells that share it)."""
    cell_of = np.minimum(np.searchsorted(ci, np.arange(resolution), side="right") - 1, len(ci) - 2)
    m = np.zeros((resolution, len(ci) - 1), np.float32)
    m[np.arange(resolution), cell_of] = 1.0
    m[ci[1:-1], np.arange(len(ci) - 2)] = 1.0  # an inner coarse plane also closes the cell before it
    return m


def _sample_points(field: Any, axis: Optional[np.ndarray], chunk: int, device: Any,
                   points: Optional[np.ndarray] = None, progress: Progress = None) -> np.ndarray:
    """Density at the lattice ``axis``³ (index order x, y, z) or at ``points`` float [N, 3]: float32 [N]."""
    if points is None:
        assert axis is not None
        points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    return query(field.density, points, chunk, device, progress, "sample").reshape(-1)

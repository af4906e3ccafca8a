"""Sample a :class:`backend.interfaces.Field` on a regular grid over the NeRF bound, in chunks.

The grid has ``R`` samples per axis at ``linspace(-b, b, R)`` with ``b = NERF_BOUND_RADIUS_M``; index ``[i, j, k]``
is the head-frame point ``(x_i, y_j, z_k)``. Every field query is chunked so a GPU field never sees more than
``chunk`` points at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from backend.export.errors import ExportError
from shared.conventions import NERF_BOUND_RADIUS_M

Progress = Optional[Callable[[str, int, int], None]]


@dataclass(frozen=True)
class Grid:
    """A cubic sample grid: ``R`` samples per axis from ``-bound`` to ``bound`` (metres, head frame)."""

    resolution: int
    bound: float = NERF_BOUND_RADIUS_M

    @property
    def spacing(self) -> float:
        """h: the distance between neighbouring samples in metres."""
        return 2.0 * self.bound / (self.resolution - 1)

    def axis(self) -> np.ndarray:
        """float32 [R] sample coordinates along one axis."""
        return np.linspace(-self.bound, self.bound, self.resolution, dtype=np.float32)

    def to_head(self, index: np.ndarray) -> np.ndarray:
        """[..., 3] fractional grid indices -> head-frame points in metres."""
        return -self.bound + index * self.spacing


def _field_device(field: object) -> torch.device:
    device = getattr(field, "device", None)
    if device is None:
        params = getattr(field, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else "cpu"
    return torch.device(device)


@torch.no_grad()
def query(fn: Callable[[torch.Tensor], torch.Tensor], points: np.ndarray, chunk: int, device: torch.device,
          progress: Progress = None, stage: str = "") -> np.ndarray:
    """Evaluate ``fn`` (a Field method) on float [N, 3] head-frame points in chunks -> float32 [N, ...] numpy."""
    out = []
    n_chunks = max(1, -(-len(points) // chunk))
    for c in range(n_chunks):
        p = torch.from_numpy(np.ascontiguousarray(points[c * chunk:(c + 1) * chunk], dtype=np.float32))
        out.append(fn(p.to(device)).float().cpu().numpy())
        if progress:
            progress(stage, c + 1, n_chunks)
    return np.concatenate(out, axis=0) if out else np.zeros((0,), np.float32)


@torch.no_grad()
def sample_density(field: Any, grid: Grid, chunk: int, progress: Progress = None) -> np.ndarray:
    """Volume density sigma on the grid: float32 [R, R, R], index [i, j, k] = (x_i, y_j, z_k), per metre."""
    R = grid.resolution
    ax = grid.axis()
    device = _field_device(field)
    slabs = max(1, chunk // (R * R))  # whole x-slabs per query keeps the point arrays small
    sigma = np.empty((R, R, R), np.float32)
    yz = np.stack(np.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2)  # [R*R, 2]
    n_steps = -(-R // slabs)
    for s, i0 in enumerate(range(0, R, slabs)):
        xs = ax[i0:i0 + slabs]
        pts = np.concatenate([np.repeat(xs, len(yz))[:, None], np.tile(yz, (len(xs), 1))], axis=1)  # [n, 3]
        d = field.density(torch.from_numpy(pts).to(device)).float().reshape(-1).cpu().numpy()
        sigma[i0:i0 + len(xs)] = d.reshape(len(xs), R, R)
        if progress:
            progress("sample", s + 1, n_steps)
    check_finite(sigma)
    return np.maximum(sigma, 0.0)


def check_finite(sigma: np.ndarray) -> None:
    """Raise :class:`ExportError` when the field returned NaN or infinite densities (any shape)."""
    if not np.isfinite(sigma).all():
        bad = int((~np.isfinite(sigma)).sum())
        raise ExportError(f"the field returned {bad} non-finite densities",
                          hint="the NeRF diverged; re-run the distillation (a lower learning rate or another seed)")


def linear_interpolation(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Matrix float32 [len(dst), len(src)] of 1D linear interpolation from samples at ``src`` to points ``dst``."""
    m = np.zeros((len(dst), len(src)), np.float32)
    j = np.clip(np.searchsorted(src, dst, side="right") - 1, 0, len(src) - 2)
    gap = src[j + 1] - src[j]
    t = np.clip((dst - src[j]) / np.where(gap > 0, gap, 1.0), 0.0, 1.0)  # a repeated sample: take the first
    m[np.arange(len(dst)), j] = 1.0 - t
    m[np.arange(len(dst)), j + 1] = t
    return m


def upsample(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Separable linear interpolation of a cube x [n, n, n] by the matrix m [R, n] along each axis: float32
    [R, R, R]."""
    y = np.tensordot(m, x, axes=(1, 0))
    y = np.tensordot(y, m, axes=(1, 1)).transpose(0, 2, 1)
    return np.tensordot(y, m, axes=(2, 1)).astype(np.float32)

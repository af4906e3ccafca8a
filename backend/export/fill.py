"""Completing colours the views never showed: a harmonic fill on the mesh graph.

Given per-vertex colours c and trust s in [0, 1] (how well the views saw each vertex), the filled colours x minimise

    sum over edges (x_i - x_j)^2  +  LAMBDA · sum_i s_i |x_i - c_i|^2

i.e. (L + LAMBDA S) x = LAMBDA S c with L the graph Laplacian of the welded mesh: seen vertices keep their colour,
unseen ones take the smooth (harmonic) blend of the seen colours around them. It works on the surface in 3D, so the
result is seamless across UV charts, and it is deterministic (a sparse direct solve).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, diags
from scipy.sparse.linalg import splu

LAMBDA = 1e3  # a seen vertex's pull towards its own colour, relative to one edge's smoothness
EPS = 1e-6  # a weak pull towards the mean seen colour keeps the system regular on parts no view saw at all


def harmonic_fill(n_vertices: int, faces: np.ndarray, colours: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Filled colours float32 [V, C] from colours float [V, C] and trust seen float [V] in [0, 1]; faces int [F, 3]
    of the welded mesh (shared vertices, so the fill crosses UV seams)."""
    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    adj = coo_matrix((np.ones(len(i)), (i, j)), shape=(n_vertices, n_vertices)).tocsr()
    adj.data[:] = 1.0  # an edge counts once, however many faces share it
    lap = diags(np.asarray(adj.sum(axis=1)).ravel()) - adj
    s = np.clip(np.asarray(seen, dtype=np.float64), 0.0, 1.0)
    c = np.asarray(colours, dtype=np.float64)
    mean = (s[:, None] * c).sum(0) / max(s.sum(), 1e-12) if s.sum() > 0 else c.mean(0)
    a = (lap + diags(LAMBDA * s + EPS)).tocsc()
    rhs = LAMBDA * s[:, None] * c + EPS * mean[None]
    return splu(a).solve(rhs).astype(np.float32)

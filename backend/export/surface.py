"""Density grid -> a clean, closed, decimated triangle mesh of the head (head frame, metres).

1. marching cubes on log(sigma) (the network's density is roughly exponential across the surface, so the log is close
   to linear there and the vertex interpolation is accurate); the grid is padded with empty space so every part
   closes where it meets the bound;
2. connected components: the head is the part whose enclosed volume holds the origin (the face centroid by
   ``shared.conventions``), else the largest; parts inside the head (cavities), parts touching the bound
   (background) and parts smaller than ``keep_fraction`` of the head's area are dropped;
3. quadric decimation (fast-simplification) to the face budget.
"""

from __future__ import annotations

import mcubes
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from backend.export.grid import Grid

HOLE_MAX_EDGES = 64  # a hole the decimator left that is closed with a fan (never seen above ~10 edges)
PINCH_SEPARATION_M = 2.5e-4  # > Blender's default merge distance (0.1 mm), far below a texel or a cell


def marching_cubes(sigma: np.ndarray, level: float, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface sigma = level: vertices float64 [V, 3] head frame, faces int64 [F, 3] wound outward."""
    floor = level * 1e-4  # empty space: far below the level, finite in log space
    g = np.pad(np.log(np.maximum(sigma, floor)), 1, constant_values=np.log(floor))
    v, f = mcubes.marching_cubes(g, float(np.log(level)))
    v = grid.to_head(v - 1.0)
    f = f.astype(np.int64)
    if len(f) and signed_volume(v, f) < 0:  # the density grows inward, so outward winding has positive volume
        f = f[:, ::-1].copy()
    return v, f


def marching_cubes_sdf(phi: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Zero set of a signed distance phi float [R, R, R] (negative inside): vertices float64 [V, 3] head frame,
    faces int64 [F, 3] wound outward. Padded with outside so the surface closes at the bound."""
    g = np.pad(-phi, 1, constant_values=-float(np.abs(phi).max() + grid.spacing))
    v, f = mcubes.marching_cubes(g, 0.0)
    v = grid.to_head(v - 1.0)
    f = f.astype(np.int64)
    if len(f) and signed_volume(v, f) < 0:
        f = f[:, ::-1].copy()
    return v, f


def signed_volume(v: np.ndarray, f: np.ndarray) -> float:
    """Enclosed volume of a closed mesh (positive when wound outward)."""
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def face_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """[F] triangle areas."""
    return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)


def winding_number(v: np.ndarray, f: np.ndarray, q: np.ndarray) -> float:
    """Generalised winding number of the point q [3] w.r.t. the triangle soup (v, f) (1 inside, 0 outside)."""
    a, b, c = v[f[:, 0]] - q, v[f[:, 1]] - q, v[f[:, 2]] - q
    la, lb, lc = (np.linalg.norm(x, axis=1) for x in (a, b, c))
    det = np.einsum("ij,ij->i", a, np.cross(b, c))
    den = la * lb * lc + np.einsum("ij,ij->i", a, b) * lc + np.einsum("ij,ij->i", b, c) * la \
        + np.einsum("ij,ij->i", c, a) * lb
    return float(np.arctan2(det, den).sum() / (2.0 * np.pi))


def components(n_vertices: int, f: np.ndarray) -> np.ndarray:
    """Connected-component label per face: int [F]."""
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0]])
    adj = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n_vertices, n_vertices))
    _, label = connected_components(adj, directed=False)
    return label[f[:, 0]]


def keep_head(v: np.ndarray, f: np.ndarray, grid: Grid, keep_fraction: float) -> tuple[np.ndarray, np.ndarray, dict]:
    """Drop floaters, cavities and background; returns the compacted mesh and a summary. ``keep_fraction`` > 1
    keeps the head alone."""
    label = components(len(v), f)
    ids, inverse = np.unique(label, return_inverse=True)
    area = np.bincount(inverse, weights=face_areas(v, f))
    parts = [f[inverse == k] for k in range(len(ids))]
    holds_origin = [winding_number(v, p, np.zeros(3)) > 0.5 for p in parts]
    head = int(np.argmax(holds_origin)) if any(holds_origin) else int(np.argmax(area))
    margin = grid.bound - 2.0 * grid.spacing
    keep = []
    for k, p in enumerate(parts):
        pv = v[np.unique(p)]
        if k == head:
            keep.append(k)
        elif area[k] >= keep_fraction * area[head] and np.abs(pv).max() < margin \
                and winding_number(v, parts[head], pv.mean(0)) < 0.5:
            keep.append(k)
    kept = np.concatenate([parts[k] for k in keep])
    used, remap = np.unique(kept, return_inverse=True)
    info = {"components": len(ids), "kept_components": len(keep), "head_holds_origin": bool(holds_origin[head])}
    return v[used], remap.reshape(-1, 3), info


def decimate(v: np.ndarray, f: np.ndarray, faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric decimation to about ``faces`` triangles (no-op when the mesh is already small enough).

    Collapses across thin parts can pinch two sheets onto one edge; :func:`split_pinches` separates them again.
    Where that leaves open edges (chains of pinched edges), gentler settings are tried; the result with the fewest
    open edges wins (0 for every mesh we have seen)."""
    if len(f) <= faces:
        return separate_pinches(*split_pinches(v, f))
    import fast_simplification

    best = None
    for agg in (7.0, 5.0, 3.0):  # fast_simplification's default aggressiveness first
        v2, f2 = fast_simplification.simplify(v.astype(np.float32), f.astype(np.int32), target_count=faces, agg=agg)
        v2, f2 = split_pinches(v2.astype(np.float64), f2.astype(np.int64))
        n_open = open_edges(f2)
        if best is None or n_open < best[0]:
            best = (n_open, v2, f2)
        if n_open == 0:
            break
    v2, f2 = best[1], best[2]
    if best[0]:  # rare (a few edges where an odd number of sheets met): close those small holes with fans
        v2, f2 = close_holes(v2, f2)
    return separate_pinches(v2, f2)


def close_holes(v: np.ndarray, f: np.ndarray, max_edges: int = HOLE_MAX_EDGES) -> tuple[np.ndarray, np.ndarray]:
    """Close each hole (a connected set of open edges) of at most ``max_edges`` edges with a fan of triangles around
    its centroid, wound like its neighbours. v float [V, 3], f int [F, 3] -> (float [V + holes, 3], int [F', 3])."""
    d = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])  # directed edges, as their faces wind them
    _, inverse, counts = np.unique(np.sort(d, axis=1), axis=0, return_inverse=True, return_counts=True)
    rim = d[counts[inverse.reshape(-1)] == 1]
    if len(rim) == 0:
        return v, f
    graph = coo_matrix((np.ones(len(rim), np.int8), (rim[:, 0], rim[:, 1])), shape=(len(v), len(v)))
    _, label = connected_components(graph, directed=False)
    hole = label[rim[:, 0]]
    new_v, new_f = [v], [f]
    for h in np.unique(hole):
        edges = rim[hole == h]
        if len(edges) > max_edges:
            continue
        centre = len(v) + len(new_v) - 1
        new_v.append(v[np.unique(edges)].mean(axis=0, keepdims=True))
        new_f.append(np.stack([edges[:, 1], edges[:, 0], np.full(len(edges), centre)], axis=1))
    return np.concatenate(new_v), np.concatenate(new_f).astype(f.dtype)


def separate_pinches(v: np.ndarray, f: np.ndarray, distance: float = PINCH_SEPARATION_M
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Move the copies that :func:`split_pinches` made of one vertex apart, each ``distance`` towards the centre
    of its own fan, so no two vertices share a position: the mesh then stays manifold when a tool welds vertices
    by position (trimesh's merge, Blender's Merge by Distance at its 0.1 mm default)."""
    _, inverse, counts = np.unique(v, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    shared = counts[inverse] > 1
    if not shared.any():
        return v, f
    centroid = v[f].mean(axis=1)  # [F, 3]
    idx = f.reshape(-1)
    fan = np.stack([np.bincount(idx, np.repeat(centroid[:, c], 3), minlength=len(v)) for c in range(3)], axis=1)
    fan /= np.maximum(np.bincount(idx, minlength=len(v)), 1)[:, None]
    step = fan - v
    step /= np.maximum(np.linalg.norm(step, axis=1, keepdims=True), 1e-30)
    v = v.copy()
    v[shared] += distance * step[shared]
    return v, f


def open_edges(f: np.ndarray) -> int:
    """Edges used by one face only (0 for a closed mesh)."""
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    return int((counts == 1).sum())


def split_pinches(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Give every fan of faces around a vertex its own copy of the vertex, where fans meet only at non-manifold
    edges or at a single vertex. Corners (face, vertex) are joined across edges shared by exactly two faces; each
    connected set of corners becomes one output vertex. Returns (vertices [V', 3], faces [F, 3])."""
    F = len(f)
    corner = np.arange(3 * F).reshape(F, 3)
    k0, k1 = np.array([0, 1, 2]), np.array([1, 2, 0])
    e = np.sort(np.stack([f[:, k0], f[:, k1]], axis=-1).reshape(-1, 2), axis=1)  # [3F, 2], edge k of face i at 3i+k
    _, inverse, counts = np.unique(e, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    manifold = np.flatnonzero(counts[inverse] == 2)
    order = manifold[np.argsort(inverse[manifold], kind="stable")]
    a, b = order[0::2], order[1::2]  # the two face-edges of each manifold edge
    fa, ka, fb, kb = a // 3, a % 3, b // 3, b % 3
    src, dst = [], []
    for ca, cb in (((fa, ka), (fb, kb)), ((fa, k1[ka]), (fb, k1[kb]))):
        va = f[ca[0], ca[1]]
        # the same vertex sits at corner kb or k1[kb] of face fb
        other = np.where(f[fb, kb] == va, corner[fb, kb], corner[fb, k1[kb]])
        src.append(corner[ca[0], ca[1]])
        dst.append(other)
    src, dst = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(3 * F, 3 * F))
    n, label = connected_components(graph, directed=False)
    pos = np.zeros((n, 3))
    pos[label] = v[f.reshape(-1)]
    return pos, label.reshape(F, 3)



"""UV atlas with xatlas, charted per spatial patch so it stays fast.

xatlas's charting cost grows faster than linearly with the face count (about 4 s at 20k faces and 22 s at 50k on
two cores, docs/anchors.md). We cut the mesh into ``patches`` compact pieces (k-means on face centroids and normals,
so a patch never wraps around a thin part such as an ear), add every piece to one ``xatlas.Atlas`` and let it chart
and pack them together: charts never cross a patch border, which adds a few seams but roughly halves the time.
The mesh is scaled to unit median edge length first (see ``_unit_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xatlas

MIN_PATCH_FACES = 60_000  # smaller pieces add seams: a patch border is cut into many small charts (a 20k-face
# distilled head: 304 charts whole, 756 in three patches; at 46k faces 670 whole in 6 s, 1145 in two in 2.4 s)
CHART_MAX_COST = 8.0  # xatlas ChartOptions.max_cost (default 2.0)


@dataclass
class Unwrapped:
    """The mesh split at UV seams. ``source`` maps each new vertex to the input vertex it copies."""

    source: np.ndarray  # int64 [V'] index into the input vertices
    faces: np.ndarray  # int64 [F, 3] into the new vertices
    uv: np.ndarray  # float32 [V', 2] in [0, 1], origin bottom-left (OBJ convention; the GLB writer flips v)
    charts: int
    utilization: float


def patch_labels(v: np.ndarray, f: np.ndarray, n_patches: int, iterations: int = 8, seed: int = 0) -> np.ndarray:
    """k-means label per face on (centroid, normal · patch size): int [F]."""
    k = int(max(1, min(n_patches, len(f) // MIN_PATCH_FACES)))
    if k == 1:
        return np.zeros(len(f), np.int64)
    c = v[f].mean(axis=1)
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    size = np.linalg.norm(c.max(0) - c.min(0)) / k ** (1.0 / 3.0)  # a typical patch diameter
    x = np.concatenate([c, 0.5 * size * n], axis=1)
    rng = np.random.default_rng(seed)
    centres = x[rng.choice(len(x), k, replace=False)]
    for _ in range(iterations):
        d = (x ** 2).sum(1)[:, None] - 2.0 * x @ centres.T + (centres ** 2).sum(1)[None]
        label = np.argmin(d, axis=1)
        counts = np.bincount(label, minlength=k)
        sums = np.stack([np.bincount(label, x[:, j], minlength=k) for j in range(x.shape[1])], axis=1)
        centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
    return label


def unwrap(v: np.ndarray, f: np.ndarray, texture: int, padding: int, n_patches: int) -> Unwrapped:
    """Chart and pack the mesh (float [V, 3], int [F, 3]) into one texture of ``texture``² texels."""
    label = patch_labels(v, f, n_patches)
    v = v * _unit_scale(v, f)  # xatlas's epsilons assume edges of about unit length
    atlas = xatlas.Atlas()
    pieces = []
    for k in np.unique(label):
        fk = f[label == k]
        used, local = np.unique(fk, return_inverse=True)
        atlas.add_mesh(v[used].astype(np.float32), local.reshape(-1, 3).astype(np.uint32))
        pieces.append(used)
    chart, pack = xatlas.ChartOptions(), xatlas.PackOptions()
    # larger charts than xatlas's defaults: a head's gently curved skin unfolds with little stretch, and every chart
    # costs padding texels and a seam. Chart shape (straightness, roundness) does not matter to a baked texture.
    chart.max_cost, chart.straightness_weight, chart.roundness_weight = CHART_MAX_COST, 0.0, 0.0
    pack.resolution, pack.padding, pack.bilinear = texture, padding, True
    atlas.generate(chart, pack)
    if atlas.atlas_count != 1:  # charts overflowed the requested size: let xatlas pick one (larger) atlas
        pack.resolution = 0
        atlas = _regenerate(v, f, label, pieces, chart, pack)
    src, faces, uvs, offset = [], [], [], 0
    for k, used in enumerate(pieces):
        vmap, idx, uv = atlas[k]
        src.append(used[vmap.astype(np.int64)])
        faces.append(idx.astype(np.int64).reshape(-1, 3) + offset)
        uvs.append(uv)
        offset += len(vmap)
    return Unwrapped(np.concatenate(src), np.concatenate(faces), np.concatenate(uvs).astype(np.float32),
                     int(atlas.chart_count), float(atlas.utilization[0] if np.ndim(atlas.utilization) else
                                                   atlas.utilization))


def _unit_scale(v: np.ndarray, f: np.ndarray) -> float:
    """1 / median edge length. At metre scale xatlas takes 2 mm edges for near-degenerate and cuts the mesh into
    ~5x more, tiny charts (slower, and a worse atlas)."""
    e = np.linalg.norm(v[f[:, [1, 2, 0]]] - v[f], axis=-1)
    return 1.0 / max(float(np.median(e)), 1e-12)


def _regenerate(v: np.ndarray, f: np.ndarray, label: np.ndarray, pieces: list, chart, pack) -> xatlas.Atlas:
    atlas = xatlas.Atlas()
    for k, used in zip(np.unique(label), pieces):
        local = np.searchsorted(used, f[label == k])
        atlas.add_mesh(v[used].astype(np.float32), local.astype(np.uint32))
    atlas.generate(chart, pack)
    return atlas

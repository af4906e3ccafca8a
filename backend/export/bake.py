"""Bake the field's colour into the UV atlas.

Every triangle is rasterised in UV space (Pillow draws each face's id into an int32 image, in C); each covered
texel's centre is mapped to barycentric coordinates of its face (clamped onto the triangle), then to its 3D surface
point, where ``Field.colour`` is queried; with a completion, texels the views saw poorly blend towards the harmonic
fill of ``backend.export.fill`` (trust interpolated from the vertices' visibility).
Seam dilation then gives every empty texel the colour of the nearest
covered one (a Euclidean distance transform), so bilinear filtering and mip-maps never bleed background into a chart.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import distance_transform_edt

from backend.export.complete import background_trust


def rasterise_ids(uv: np.ndarray, faces: np.ndarray, size: int) -> np.ndarray:
    """Face id per texel: int32 [size, size] (-1: empty). Row 0 is the top of the image (v = 1)."""
    img = Image.new("I", (size, size), 0)
    draw = ImageDraw.Draw(img)
    px = np.stack([uv[:, 0] * size - 0.5, (1.0 - uv[:, 1]) * size - 0.5], axis=1)  # Pillow: integer = pixel centre
    tri = px[faces]  # [F, 3, 2]
    for i, t in enumerate(tri.tolist()):
        draw.polygon([tuple(p) for p in t], fill=i + 1)
    return np.asarray(img, dtype=np.int32) - 1


def texel_points(uv: np.ndarray, faces: np.ndarray, positions: np.ndarray, ids: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Surface points of the covered texels: (flat texel indices int [N], head-frame points float32 [N, 3])."""
    flat, f, bary = texel_barycentrics(uv, faces, ids)
    return flat, np.einsum("nk,nkd->nd", bary, positions[faces[f]]).astype(np.float32)


def texel_barycentrics(uv: np.ndarray, faces: np.ndarray, ids: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The covered texels: flat indices int [N], their face int [N] and barycentrics float64 [N, 3] (clamped onto
    the face, so texels just outside a triangle's edge take its edge's values)."""
    size = ids.shape[0]
    flat = np.flatnonzero(ids.ravel() >= 0)
    f = ids.ravel()[flat]
    row, col = np.divmod(flat, size)
    p = np.stack([(col + 0.5) / size, 1.0 - (row + 0.5) / size], axis=1)  # texel centre in UV
    a, b, c = (uv[faces[f, k]].astype(np.float64) for k in range(3))
    v0, v1, v2 = b - a, c - a, p - a
    d00, d01, d11 = (v0 * v0).sum(1), (v0 * v1).sum(1), (v1 * v1).sum(1)
    d20, d21 = (v2 * v0).sum(1), (v2 * v1).sum(1)
    den = d00 * d11 - d01 * d01
    den = np.where(np.abs(den) < 1e-30, 1e-30, den)
    w1 = (d11 * d20 - d01 * d21) / den
    w2 = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1.0 - w1 - w2, w1, w2], axis=1), 0.0, None)  # clamp texels just outside onto the face
    bary /= np.maximum(bary.sum(1, keepdims=True), 1e-12)
    return flat, f, bary


def dilate(image: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Fill every empty texel with its nearest covered texel's colour: [H, W, C] -> [H, W, C]."""
    if covered.all() or not covered.any():
        return image
    _, (ri, ci) = distance_transform_edt(~covered, return_indices=True)
    return image[ri, ci]


def bake(uv: np.ndarray, faces: np.ndarray, positions: np.ndarray, size: int,
         colour: Callable[[np.ndarray], np.ndarray], seen: Optional[np.ndarray] = None,
         fill: Optional[np.ndarray] = None, background: Optional[np.ndarray] = None
         ) -> tuple[np.ndarray, float, Optional[np.ndarray]]:
    """Texture uint8 [size, size, 3], the covered fraction and the visibility map (uint8 [size, size], 255 = seen;
    None without ``seen``). ``colour`` maps float32 [N, 3] -> [N, 3] in 0..1.

    With per-vertex trust ``seen`` float [V] in 0..1 and completed colours ``fill`` float [V, 3], each texel is
    seen · colour(point) + (1 - seen) · fill (both interpolated from the texel's face), so grazing and unseen
    samples give way to the fill; unseen texels never query the field. With ``background`` float [V, 3] (the
    background colour along each vertex's view ray) a texel's trust also drops where its colour is that
    background's (``backend.export.complete.background_trust``): the NeRF's backdrop in concave places."""
    ids = rasterise_ids(uv, faces, size)
    flat, f, bary = texel_barycentrics(uv, faces, ids)
    pts = np.einsum("nk,nkd->nd", bary, positions[faces[f]]).astype(np.float32)
    rgb = np.zeros((size * size, 3), np.float32)
    covered = ids >= 0
    if seen is None:
        rgb[flat] = np.clip(colour(pts), 0.0, 1.0)
        vis = None
    else:
        s = np.einsum("nk,nk->n", bary, seen[faces[f]]).astype(np.float32)
        out = np.einsum("nk,nkc->nc", bary, fill[faces[f]]).astype(np.float32)
        look = np.flatnonzero(s > 1e-3)
        c = colour(pts[look])
        if background is not None:
            bg = np.einsum("nk,nkc->nc", bary[look], background[faces[f[look]]])
            s[look] *= background_trust(c, bg)
        out[look] += s[look, None] * (c - out[look])
        rgb[flat] = np.clip(out, 0.0, 1.0)
        vmap = np.zeros(size * size, np.float32)
        vmap[flat] = s
        vis = np.round(dilate(vmap.reshape(size, size, 1), covered)[..., 0] * 255.0).astype(np.uint8)
    img = dilate(rgb.reshape(size, size, 3), covered)
    return np.round(img * 255.0).astype(np.uint8), float(covered.mean()), vis

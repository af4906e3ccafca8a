"""Reference z-buffered triangle rasterizer and normal maps (numpy, one view, written for clarity, not speed).

The backend's batched PyTorch rasterizer (backend/render) is tested against this one. Rules shared by both:
    a pixel (x, y) is sampled at its centre (x + 0.5, y + 0.5) in the OpenCV image frame of shared.conventions;
    it is covered when all three screen-space barycentrics are >= 0 (either winding: no back-face culling, like
    Deep3DFaceRecon's nvdiffrast renders); triangles with a vertex at depth <= ``near`` are skipped;
    the nearest camera depth wins; on exactly equal depth the lower face index wins;
    barycentrics are perspective-correct (as nvdiffrast's), depth is camera-space z in metres (0 = background).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .conventions import (NORMALS_RENORMALISED, Camera, encode_normals, opencv_to_normal_frame,
                                project_points)
from .morphable import vertex_normals

NEAR_M = 1e-3


@dataclass
class Fragments:
    """What a pixel sees. face_idx int64 [H, W] (-1 = background); bary float64 [H, W, 3] perspective-correct
    weights of the face's three vertices; depth float64 [H, W] camera-space z in metres (0 on background)."""

    face_idx: np.ndarray
    bary: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.face_idx >= 0


def _edge(a: np.ndarray, b: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """2D cross product (b - a) x (p - a) for pixel centres px, py."""
    return (b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0])


def rasterize(vertices: np.ndarray, faces: np.ndarray, camera: Camera, near: float = NEAR_M) -> Fragments:
    """Rasterize triangles (vertices [V, 3] head frame, faces int [F, 3]) into one camera's image."""
    H, W = camera.height, camera.width
    uv, z = project_points(camera, np.asarray(vertices, dtype=np.float64))  # [V, 2] pixels, [V] metres
    face_idx = np.full((H, W), -1, dtype=np.int64)
    bary = np.zeros((H, W, 3))
    zbuf = np.full((H, W), np.inf)
    tri_uv, tri_z = uv[faces], z[faces]  # [F, 3, 2], [F, 3]
    x0 = np.maximum(np.ceil(tri_uv[..., 0].min(1) - 0.5), 0).astype(int)  # pixel-centre bounding boxes
    x1 = np.minimum(np.floor(tri_uv[..., 0].max(1) - 0.5), W - 1).astype(int)
    y0 = np.maximum(np.ceil(tri_uv[..., 1].min(1) - 0.5), 0).astype(int)
    y1 = np.minimum(np.floor(tri_uv[..., 1].max(1) - 0.5), H - 1).astype(int)
    live = (x0 <= x1) & (y0 <= y1) & (tri_z.min(1) > near)
    for f in np.flatnonzero(live):
        p0, p1, p2 = tri_uv[f]
        area = _edge(p0, p1, p2[0], p2[1])
        if area == 0.0:
            continue
        px, py = np.meshgrid(np.arange(x0[f], x1[f] + 1) + 0.5, np.arange(y0[f], y1[f] + 1) + 0.5)
        b = np.stack([_edge(p1, p2, px, py), _edge(p2, p0, px, py), _edge(p0, p1, px, py)], axis=-1) / area
        inside = (b >= 0).all(axis=-1)
        b_persp = b / tri_z[f]  # screen-space weights over z are linear in 3D: b_i/z_i / sum_j b_j/z_j
        inv_z = b_persp.sum(axis=-1)
        depth = 1.0 / np.where(inside, inv_z, 1.0)
        win = inside & (depth < zbuf[y0[f]: y1[f] + 1, x0[f]: x1[f] + 1])
        ys, xs = np.nonzero(win)
        ys, xs = ys + y0[f], xs + x0[f]
        zbuf[ys, xs] = depth[win]
        face_idx[ys, xs] = f
        bary[ys, xs] = b_persp[win] / inv_z[win][:, None]
    return Fragments(face_idx, bary, np.where(face_idx >= 0, zbuf, 0.0))


def interpolate(fragments: Fragments, faces: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """Per-vertex attributes [V, C] -> per-pixel float64 [H, W, C] (zeros on background)."""
    f = np.maximum(fragments.face_idx, 0)
    corner = np.asarray(attributes, dtype=np.float64)[faces[f]]  # [H, W, 3, C]
    out = (fragments.bary[..., None] * corner).sum(axis=-2)
    return out * fragments.mask[..., None]


def camera_normals(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """float64 [V, 3] vertex normals of (vertices, faces) in the normal map's frame (x right, y up, z to camera)."""
    n = vertex_normals(vertices, faces).astype(np.float64)
    return opencv_to_normal_frame(n @ camera.w2c[:3, :3].T)


def render_normal_map(vertices: np.ndarray, faces: np.ndarray, camera: Camera) -> np.ndarray:
    """The prior's normal map uint8 [H, W, 3] of the mesh (vertices [V, 3] head frame, faces int [F, 3]).

    Vertex normals are computed over ``faces`` only (pass the rig's ``normal_region_faces``), rotated into the
    camera, interpolated barycentrically and, like Deep3DFaceRecon, not renormalised; black background.
    """
    fragments = rasterize(vertices, faces, camera)
    n = interpolate(fragments, faces, camera_normals(vertices, faces, camera))
    if NORMALS_RENORMALISED:
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return encode_normals(n, fragments.mask)

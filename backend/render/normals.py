"""Normal maps of a mesh for many views, with the convention of :mod:`shared.conventions` (camera-space normals,
red to image right, green up, blue toward the camera, (n * 0.5 + 0.5) * 255, black background, not renormalised)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from backend.render.raster import camera_tensors, rasterize_sparse
from shared.conventions import NORMALS_RENORMALISED, OPENCV_TO_NORMAL_FRAME, Camera


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals [V, 3]: normalised sum of the adjacent unit face normals (Deep3DFaceRecon's rule). The
    torch twin of :func:`shared.morphable.vertex_normals`, kept because normal maps are rendered batched on the GPU."""
    faces = faces.long()
    tri = vertices[faces]  # [F, 3, 3]
    n_face = torch.nn.functional.normalize(torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1),
                                           dim=-1, eps=1e-20)
    n = torch.zeros_like(vertices).index_add_(0, faces.reshape(-1), n_face.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(n, dim=-1, eps=1e-12)


def encode_normals(n: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3] pixels from normals [..., 3] and mask bool [...] (as shared.conventions.encode_normals)."""
    rgb = (n * 0.5 + 0.5) * mask[..., None]
    return torch.round(rgb * 255.0).clamp(0, 255).to(torch.uint8)


def render_normal_maps(vertices: torch.Tensor, faces: torch.Tensor, cameras: Sequence[Camera],
                       device: Optional[torch.device | str] = None, views_per_chunk: int = 16) -> torch.Tensor:
    """Normal maps uint8 [N, H, W, 3] of one mesh (vertices [V, 3] head frame, faces [F, 3]) in every camera.

    Pass the rig's ``normal_region_faces``: vertex normals are computed over ``faces`` only. Computed in float32
    on ``device`` (default: the vertices' device); the result stays on that device.
    """
    if not isinstance(vertices, torch.Tensor):  # a copy: a rig's arrays may be read-only, which torch warns about
        vertices = torch.from_numpy(np.array(vertices, dtype=np.float32))
    if not isinstance(faces, torch.Tensor):
        faces = torch.from_numpy(np.array(faces, dtype=np.int64))
    device = torch.device(device) if device is not None else vertices.device
    vertices = vertices.to(device=device, dtype=torch.float32)
    faces = faces.to(device).long()
    n_world = vertex_normals(vertices, faces)
    flip = torch.tensor(OPENCV_TO_NORMAL_FRAME, dtype=vertices.dtype, device=device)
    H, W = cameras[0].height, cameras[0].width
    out = torch.zeros(len(cameras) * H * W, 3, dtype=torch.uint8, device=device)
    for chunk, frag in rasterize_sparse(vertices, faces, cameras, views_per_chunk):
        # Rotation is linear, so interpolating world normals and then rotating equals rotating first.
        n = (frag.bary[..., None] * n_world[faces[frag.face]]).sum(1)  # [M, 3] head frame
        w2c, _ = camera_tensors(cameras[chunk], device, vertices.dtype)
        bounds = frag.view_bounds()
        for i in range(frag.n):
            seg = slice(bounds[i], bounds[i + 1])
            n[seg] = (n[seg] @ w2c[i, :3, :3].T) * flip
        if NORMALS_RENORMALISED:
            n = torch.nn.functional.normalize(n, dim=-1)
        out[frag.pixel + chunk.start * H * W] = encode_normals(n, torch.ones_like(n[:, 0], dtype=torch.bool))
    return out.view(len(cameras), H, W, 3)

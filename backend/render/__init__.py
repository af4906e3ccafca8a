"""Batched PyTorch rendering of rig meshes: rasterization, attribute interpolation and the prior's normal maps.
Tested against the numpy reference in :mod:`shared.raster`."""

from backend.render.normals import encode_normals, render_normal_maps, vertex_normals
from backend.render.raster import (Fragments, SparseFragments, interpolate, project, rasterize, rasterize_chunks,
                                   rasterize_sparse)

__all__ = ["Fragments", "SparseFragments", "rasterize", "rasterize_chunks", "rasterize_sparse", "interpolate",
           "project", "render_normal_maps", "vertex_normals", "encode_normals"]

"""Settings of mesh extraction and texture baking (``backend.export``).

Defaults follow the anchors (stable-dreamfusion, nerfstudio): a 256³ density grid, 50k faces, a 1024² texture.
Presets with honest CPU timings are in docs/EXPORT.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..spec import spec

FORMATS = ("glb", "glb+obj")
SAMPLINGS = ("sparse", "dense")


@dataclass
class ExportConfig:
    faces: int = spec(50_000, lo=500, hi=1_000_000, doc="target triangle count after decimation")
    texture: int = spec(1024, choices=(256, 512, 1024, 2048, 4096), doc="texture width and height in pixels")
    resolution: int = spec(256, lo=32, hi=512,
                           doc="density grid cells per axis over the NeRF bound (256: 1.6 mm cells)")
    iso: Optional[float] = spec(None, lo=1e-6, hi=1e6,
                                doc="density iso-level override (per metre); None chooses it from the renderer")
    keep_fraction: float = spec(0.05, lo=0.0, hi=1.0,
                                doc="keep extra mesh parts whose area is at least this fraction of the head's")
    uv_patches: int = spec(32, lo=1, hi=256,
                           doc="spatial patches charted together by xatlas (1: chart the whole mesh; slower)")
    sampling: str = spec("sparse", choices=SAMPLINGS,
                         doc="sparse: the full grid only near the surface (same mesh, ~5x fewer field queries); dense")
    padding: int = spec(2, lo=0, hi=16, doc="texels between UV charts")
    format: str = spec("glb", choices=FORMATS, doc="glb, or glb+obj to add OBJ + MTL + PNG files")
    chunk: int = spec(262_144, lo=1024, hi=16_777_216,
                      doc="points per field query; lower it if the GPU runs out of memory")


"""Settings of mesh extraction and texture baking."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import spec


@dataclass
class ExportConfig:
    faces: int = spec(50_000, lo=500, hi=1_000_000, doc="target triangle count after decimation")
    texture: int = spec(1024, choices=(256, 512, 1024, 2048, 4096), doc="texture width and height in pixels")

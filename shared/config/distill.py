"""Settings of the progressive distillation (schedule, views, resolutions) and its presets."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import spec


@dataclass
class DistillConfig:
    preset: str = spec("paper", choices=("paper", "fast", "draft"), doc="paper: the reference schedule")

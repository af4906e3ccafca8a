"""Settings of the 2D diffusion prior."""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import spec


@dataclass
class PriorConfig:
    mode: str = spec("joker", choices=("joker", "free", "oracle"),
                     doc="joker: the authors' checkpoint; free: any SD1.5 + normal ControlNet; oracle: test prior")
    precision: str = spec("auto", choices=("auto", "fp32", "fp16", "bf16"),
                          doc="auto: bf16 on CUDA, fp32 on CPU")

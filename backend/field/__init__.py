"""The radiance field distilled from the prior: a hash-grid NeRF in the head frame (``HeadNeRF``), its hash encoding
(tiny-cuda-nn or a pure-PyTorch twin with the same layout) and the environment-map background."""

from backend.field.background import EnvironmentBackground, sh_encode
from backend.field.hashgrid import HashGrid, HashGridSpec, tcnn_available
from backend.field.nerf import HeadNeRF

__all__ = ["EnvironmentBackground", "HashGrid", "HashGridSpec", "HeadNeRF", "sh_encode", "tcnn_available"]

"""The head NeRF: hash grid -> bias-free density and feature MLPs, softplus density with the blob bias, sigmoid
colour, and a neural environment-map background (docs/REFERENCE.md §4 "NeRF model").

Frames and units: points are in the head frame in metres (``shared.conventions``). The bound is the reference's cube
[-0.25, 0.25]^3 Joker units around the origin, i.e. ``NERF_BOUND_RADIUS_M``. The networks keep the reference's
density scale (per Joker unit, blob bias 10 (1 - |x| / 0.125) in Joker units); :meth:`HeadNeRF.density` returns it
per metre so that volume rendering in metres gives the reference's opacities.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from backend.field.background import EnvironmentBackground
from backend.field.hashgrid import HashGrid, HashGridSpec
from backend.field.mlp import mlp
from shared.config import DistillConfig
from shared.conventions import BLOB_RADIUS_M, JOKER_UNIT_M, NERF_BOUND_RADIUS_M

BLOB_SCALE = 10.0  # blob_magic3d: +10 at the centre, 0 at BLOB_RADIUS_M, -10 at the bound


class HeadNeRF(nn.Module):
    """Implements ``backend.guidance.Field``. ``radius``: half side of the cube bound, metres, centred at the origin."""

    def __init__(self, grid: HashGridSpec = HashGridSpec(), implementation: str = "auto",
                 radius: float = NERF_BOUND_RADIUS_M, hidden: int = 64):
        super().__init__()
        self.radius = float(radius)
        self.encoding = HashGrid(grid, implementation)
        self.density_net = mlp(self.encoding.n_output, 1, hidden, 1)
        self.feature_net = mlp(self.encoding.n_output, 3, hidden, 1)
        self.background = EnvironmentBackground()

    @classmethod
    def from_config(cls, cfg: DistillConfig, implementation: str = "auto") -> "HeadNeRF":
        r = cfg.resolved()
        spec = HashGridSpec(r.grid_levels, 2, r.grid_log2_table, r.grid_base_res, r.grid_per_level_scale)
        return cls(spec, implementation)

    def param_groups(self, lr_grid: float, lr_mlp: float) -> list[dict]:
        """AdamW groups of the reference: hash grid at ``lr_grid``, MLPs and background at ``lr_mlp``."""
        rest = [p for n, p in self.named_parameters() if not n.startswith("encoding.")]
        return [{"params": list(self.encoding.parameters()), "lr": lr_grid}, {"params": rest, "lr": lr_mlp}]

    def forward(self, points: torch.Tensor, with_colour: bool = True) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """points float [N, 3] head frame, metres -> (density per metre float [N], colour float [N, 3] or None).

        Points outside the bound have zero density."""
        u = (points / self.radius + 1.0) * 0.5  # [N, 3] in [0, 1] inside the bound
        inside = ((u >= 0) & (u <= 1)).all(-1)
        h = self.encoding(u.clamp(0.0, 1.0))
        blob = BLOB_SCALE * (1.0 - points.norm(dim=-1) / BLOB_RADIUS_M)
        sigma = F.softplus(self.density_net(h)[:, 0] + blob) / JOKER_UNIT_M
        sigma = torch.where(inside, sigma, torch.zeros_like(sigma))
        rgb = torch.sigmoid(self.feature_net(h)) if with_colour else None
        return sigma, rgb

    @torch.no_grad()
    def density(self, points: torch.Tensor) -> torch.Tensor:
        """``Field.density``: float [N, 3] head frame metres -> float [N] per metre, >= 0."""
        return self._chunked(points, lambda p: self(p, with_colour=False)[0])

    @torch.no_grad()
    def colour(self, points: torch.Tensor) -> torch.Tensor:
        """``Field.colour``: float [N, 3] head frame metres -> float [N, 3] in 0..1."""
        return self._chunked(points, lambda p: self(p)[1])

    def _chunked(self, points: torch.Tensor, fn, chunk: int = 1 << 18) -> torch.Tensor:
        device = next(self.parameters()).device
        outs = [fn(points[i:i + chunk].to(device).float()) for i in range(0, points.shape[0], chunk)]
        return torch.cat(outs).to(points.device) if outs else points.new_zeros((0,))

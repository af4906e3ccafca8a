"""Fields with a known answer, for tests and the benchmark: analytic shapes and the true ICT head.

Each is a :class:`backend.interfaces.Field` whose density follows the reference NeRF's character — near zero outside,
saturated inside, with a soft rim — built from a signed distance d (metres, negative inside):
    sigma(x) = sigma_s · sigmoid(-d(x) / beta)
and whose colour is a smooth known pattern, so a baked texture can be checked texel by texel.
"""

from __future__ import annotations


import numpy as np
import torch

SIGMA_S = 4000.0  # per metre: opacity ~1 - exp(-14) over one 3.6 mm render step inside
BETA_M = 0.0005  # rim softness


def pattern_colour(p: torch.Tensor, wavelength: float = 0.08) -> torch.Tensor:
    """A smooth RGB pattern in 0.15..0.85: [N, 3] head-frame points -> [N, 3]."""
    k = 2.0 * np.pi / wavelength
    phase = torch.tensor([0.0, 2.1, 4.2], dtype=p.dtype, device=p.device)
    return 0.5 + 0.35 * torch.sin(k * p + phase)


class SDFField:
    """Base: subclasses define ``sdf(points [N, 3]) -> [N]`` in metres (negative inside)."""

    device = torch.device("cpu")

    def __init__(self, sigma_s: float = SIGMA_S, beta: float = BETA_M):
        self.sigma_s, self.beta = sigma_s, beta

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return self.sigma_s * torch.sigmoid(-self.sdf(points) / self.beta)

    def colour(self, points: torch.Tensor) -> torch.Tensor:
        return pattern_colour(points)


class SphereField(SDFField):
    def __init__(self, radius: float = 0.1, centre: tuple[float, float, float] = (0.0, 0.0, 0.0), **kw):
        super().__init__(**kw)
        self.radius, self.centre = radius, torch.tensor(centre)

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        return torch.linalg.norm(p - self.centre.to(p), dim=-1) - self.radius


class BoxField(SDFField):
    def __init__(self, half: tuple[float, float, float] = (0.08, 0.12, 0.06), **kw):
        super().__init__(**kw)
        self.half = torch.tensor(half)

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        q = p.abs() - self.half.to(p)
        return torch.linalg.norm(q.clamp(min=0), dim=-1) + q.max(dim=-1).values.clamp(max=0)


class GridSDFField(SDFField):
    """A signed distance sampled on a cube grid [-b, b]³ (index [i, j, k] = (x, y, z)), trilinearly interpolated."""

    def __init__(self, sdf_grid: np.ndarray, bound: float, **kw):
        super().__init__(**kw)
        self.grid = torch.from_numpy(sdf_grid.astype(np.float32))[None, None]  # [1, 1, X, Y, Z]
        self.bound = bound

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        g = (p / self.bound).flip(-1).reshape(1, -1, 1, 1, 3).float()  # grid_sample wants (z, y, x) -> (W, H, D)
        d = torch.nn.functional.grid_sample(self.grid.to(p.device), g, mode="bilinear", padding_mode="border",
                                            align_corners=True)
        return d.reshape(-1).to(p.dtype)

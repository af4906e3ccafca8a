"""The neural environment-map background (threestudio's ``neural-environment-map-background`` as Joker uses it):
ray direction -> spherical harmonics (tcnn ``SphericalHarmonics``, degree 3 = 9 coefficients) of (d + 1) / 2 ->
bias-free MLP (16 neurons, 2 hidden layers) -> sigmoid colour."""

from __future__ import annotations

import torch
from torch import nn

from backend.field.mlp import mlp


def sh_encode(u: torch.Tensor, degree: int = 3) -> torch.Tensor:
    """tcnn's SphericalHarmonics encoding: u float [N, 3] in [0, 1] (tcnn maps it to d = 2u - 1) -> [N, degree^2]."""
    if degree not in (1, 2, 3):
        raise ValueError(f"sh_encode degree: expected 1, 2 or 3, received {degree}")
    x, y, z = (u.float() * 2.0 - 1.0).unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree >= 2:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree >= 3:
        out += [1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
                0.94617469575755997 * z * z - 0.31539156525251999, -1.0925484305920792 * x * z,
                0.54627421529603959 * (x * x - y * y)]
    return torch.stack(out, dim=-1)


class EnvironmentBackground(nn.Module):
    """Background colour per ray direction (head frame): float [N, 3] unit directions -> float [N, 3] in 0..1."""

    def __init__(self, degree: int = 3, width: int = 16, hidden_layers: int = 2):
        super().__init__()
        self.degree = degree
        self.net = mlp(degree * degree, 3, width, hidden_layers)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(sh_encode((d + 1.0) * 0.5, self.degree)))

"""threestudio's ``VanillaMLP``: bias-free linear layers with ReLU between them, run in float32."""

from __future__ import annotations

from torch import nn


def mlp(n_in: int, n_out: int, width: int = 64, hidden_layers: int = 1) -> nn.Sequential:
    """n_in -> width (x hidden_layers) -> n_out, no biases, ReLU between layers, no output activation."""
    layers: list[nn.Module] = []
    dims = [n_in] + [width] * hidden_layers
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b, bias=False), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-1], n_out, bias=False))
    return nn.Sequential(*layers)

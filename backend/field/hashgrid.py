"""Multiresolution hash encoding (Müller et al. 2022) as tiny-cuda-nn computes it, with a pure-PyTorch twin.

Both implementations share one parameter layout, so a trained table moves between them unchanged:
``params`` is float32 [sum_l T_l * F] with level l's entries at ``offset_l * F`` (tcnn's ``HashGrid`` layout), and
``table = params.view(-1, F)``.

Per level l (tcnn ``grid.h``):
    scale_l = 2^(l * log2(b)) * N_min - 1          b = per-level scale, N_min = base resolution
    res_l   = ceil(scale_l) + 1
    T_l     = min(next_multiple(res_l^3, 8), 2^log2_T)
    pos     = x * scale_l + 0.5,  corner = floor(pos) + {0,1}^3,  w = trilinear weights of frac(pos)
    index   = x + y res + z res^2 (dense, when res^3 <= T_l), else x*1 ^ y*2654435761 ^ z*805459861 (uint32), mod T_l
Inputs are points in [0, 1]^3; the output is float [N, L * F], level-major.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

PRIMES = (1, 2654435761, 805459861)  # tcnn's coherent prime hash
UINT32 = 0xFFFFFFFF


@dataclass(frozen=True)
class HashGridSpec:
    n_levels: int = 16
    n_features: int = 2
    log2_table: int = 19
    base_res: int = 16
    per_level_scale: float = 1.447269

    def scale(self, level: int) -> float:
        # tcnn evaluates this in float32: exp2f(level * log2f(b)) * N_min - 1
        s = torch.exp2(torch.tensor(level, dtype=torch.float32) * torch.log2(torch.tensor(self.per_level_scale)))
        return float(s * self.base_res - 1.0)

    def resolution(self, level: int) -> int:
        return int(math.ceil(self.scale(level))) + 1

    def table_size(self, level: int) -> int:
        dense = self.resolution(level) ** 3
        return min((dense + 7) // 8 * 8, 2 ** self.log2_table)

    def offsets(self) -> list[int]:
        """Entry offset of each level, plus the total at the end."""
        out = [0]
        for level in range(self.n_levels):
            out.append(out[-1] + self.table_size(level))
        return out

    @property
    def n_output(self) -> int:
        return self.n_levels * self.n_features

    def tcnn_config(self) -> dict:
        return {"otype": "HashGrid", "n_levels": self.n_levels, "n_features_per_level": self.n_features,
                "log2_hashmap_size": self.log2_table, "base_resolution": self.base_res,
                "per_level_scale": self.per_level_scale, "interpolation": "Linear"}


def tcnn_available() -> bool:
    """True when tiny-cuda-nn imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or a build for another GPU architecture
        return False
    return True


class HashGrid(nn.Module):
    """The hash encoding. ``implementation``: "torch", "tcnn" or "auto" (tcnn when available)."""

    def __init__(self, spec: HashGridSpec = HashGridSpec(), implementation: str = "auto"):
        super().__init__()
        if implementation == "auto":
            implementation = "tcnn" if tcnn_available() else "torch"
        if implementation not in ("torch", "tcnn"):
            raise ValueError(f"HashGrid implementation: expected auto, torch or tcnn, received {implementation!r}")
        self.spec, self.implementation = spec, implementation
        offsets = spec.offsets()
        n_params = offsets[-1] * spec.n_features
        if implementation == "tcnn":
            import tinycudann as tcnn

            encoding = tcnn.Encoding(3, spec.tcnn_config(), dtype=torch.float32)
            if encoding.params.numel() != n_params:
                raise RuntimeError(f"tinycudann lays out {encoding.params.numel()} hash-grid parameters, the torch "
                                   f"twin {n_params}: this tcnn version differs; use implementation='torch'")
            self._tcnn = (encoding,)  # a tuple hides it from state_dict: both twins save one key, ``params``
            self.params = encoding.params
        else:
            self.params = nn.Parameter(torch.empty(n_params).uniform_(-1e-4, 1e-4))  # tcnn's initialisation
        levels = range(spec.n_levels)
        self._offsets, self._sizes = offsets[:-1], [spec.table_size(l) for l in levels]
        self._res, self._scales = [spec.resolution(l) for l in levels], [spec.scale(l) for l in levels]
        self.register_buffer("corners", torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)]),
                             persistent=False)  # [8, 3], corner c's offset along dim d is bit d of c (tcnn order)

    @property
    def n_output(self) -> int:
        return self.spec.n_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float [N, 3] in [0, 1] -> float32 [N, L * F]."""
        if self.implementation == "tcnn":
            return self._tcnn[0](x.float().contiguous()).float()
        return self.encode_torch(x)

    def encode_torch(self, x: torch.Tensor) -> torch.Tensor:
        """The pure-PyTorch twin of tcnn's forward pass (same indexing, same hash), one level at a time.

        Corner c of a cell has offset bit d of c along dimension d (tcnn's order); the 8 corner indices and weights
        are built as outer combinations of the two per-dimension choices, so no [N, 8, 3] tensor is formed."""
        F = self.spec.n_features
        table = self.params.view(-1, F)
        x = x.float()
        out = []
        for level in range(self.spec.n_levels):
            pos = x * self._scales[level] + 0.5  # [N, 3]
            cell = torch.floor(pos)
            frac = pos - cell
            lo = cell.long()
            index = self._index(lo, level) + self._offsets[level]  # [N, 8] rows of the table
            w = torch.stack([1.0 - frac, frac], dim=-1)  # [N, 3, 2] weight of offset 0 / 1 per dimension
            w = (w[:, 2, :, None, None] * w[:, 1, None, :, None] * w[:, 0, None, None, :]).reshape(-1, 8)
            feats = table.index_select(0, index.reshape(-1)).view(-1, 8, F)
            out.append(torch.bmm(w[:, None, :], feats)[:, 0])
        return torch.cat(out, dim=-1)  # [N, L * F], level-major

    def _index(self, lo: torch.Tensor, level: int) -> torch.Tensor:
        """lo long [N, 3] lower cell corners -> long [N, 8] index of each corner within level ``level``'s table."""
        res, size = self._res[level], self._sizes[level]
        pair = torch.stack([lo, lo + 1], dim=-1)  # [N, 3, 2]
        if res ** 3 <= size:  # dense level: x + y res + z res^2
            px, py, pz = pair[:, 0], pair[:, 1] * res, pair[:, 2] * (res * res)
            index = pz[:, :, None, None] + py[:, None, :, None] + px[:, None, None, :]
        else:  # uint32 products and xor: the low 32 bits of int64 arithmetic are the same, and T_l divides 2^32
            px, py, pz = pair[:, 0] * PRIMES[0], pair[:, 1] * PRIMES[1], pair[:, 2] * PRIMES[2]
            index = pz[:, :, None, None] ^ py[:, None, :, None] ^ px[:, None, None, :]
            return index.reshape(-1, 8) & (size - 1)  # hashed tables are 2^k long: mod is a mask
        return index.reshape(-1, 8) % size  # [N, (z, y, x)] flattened: corner c = x + 2y + 4z

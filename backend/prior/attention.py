"""Reference attention through diffusers' attention-processor API (docs/REFERENCE.md §2).

The reference UNet runs on the un-noised reference latent; every self-attention layer (``*.attn1``) records its input
tokens, i.e. ``norm1(x)`` of its ``BasicTransformerBlock``. The denoiser's ``attn1`` then attends over
``[own tokens ; reference tokens]`` with its *own* ``to_k``/``to_v``:

    Q = W_q h,   K = W_k [h ; r],   V = W_v [h ; r],   out = W_o softmax(Q K^T / sqrt(d)) V

Both UNets get a :class:`ReferenceAttnProcessor` bound to one :class:`ReferenceBank`; the bank's ``mode`` says what
the processors do (``record`` during the reference pass, ``read`` during the denoiser pass, ``off`` otherwise), so
the training-free variant can run both passes through one UNet. ``W_k r`` and ``W_v r`` are linear per token, so the
bank projects the reference tokens once per (timestep, layer) and reuses them for every view and CFG branch.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class ReferenceRecorded(Exception):
    """Raised after the last recorded layer so the reference UNet skips its unused tail (docs/REFERENCE.md §2)."""


class ReferenceBank:
    """Reference tokens per attn1 layer, shared by the processors of the reference UNet and the denoiser.

    tokens[name]: [G, n_ref * L, C] per group G (one group per CFG branch; views are concatenated view-major).
    rows:         long [N] group of each denoiser row (N = batch of the denoiser call).
    """

    def __init__(self) -> None:
        self.mode = "off"  # off | record | read
        self.tokens: dict[str, torch.Tensor] = {}
        self.rows: Optional[torch.Tensor] = None
        self.stop_after: Optional[str] = None  # raise ReferenceRecorded after recording this layer
        self._kv: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(self, name: str, h: torch.Tensor) -> None:  # h [G * n_ref, L, C]
        self.tokens[name] = h

    def finish_record(self, n_ref: int) -> None:
        """[G * n_ref, L, C] -> [G, n_ref * L, C] (reference views concatenated along tokens), drop stale K/V."""
        for name, h in self.tokens.items():
            g = h.shape[0] // n_ref
            self.tokens[name] = h.reshape(g, n_ref * h.shape[1], h.shape[2])
        self._kv.clear()

    def clear(self) -> None:
        self.tokens.clear()
        self._kv.clear()
        self.rows = None

    def keys_values(self, name: str, attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """W_k r and W_v r of the layer's reference tokens, [G, n_ref * L, inner], projected once per recording."""
        if name not in self._kv:
            r = self.tokens[name]
            self._kv[name] = (attn.to_k(r), attn.to_v(r))
        return self._kv[name]


class ReferenceAttnProcessor:
    """attn1 processor: records (reference pass), attends with reference tokens (denoiser pass) or plain SDPA.

    ``query_chunk`` > 0 splits the queries into chunks of that many tokens (attention slicing for small GPUs; the
    result is the same up to rounding).
    """

    def __init__(self, name: str, bank: ReferenceBank, query_chunk: int = 0) -> None:
        self.name, self.bank, self.query_chunk = name, bank, query_chunk

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        h = hidden_states  # [N, L, C], post-norm1 tokens
        if h.ndim != 3 or encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError(f"{self.name}: reference attention expects self-attention on [N, L, C] tokens")
        bank = self.bank
        if bank.mode == "record":
            bank.record(self.name, h)
            if bank.stop_after == self.name:
                raise ReferenceRecorded(self.name)
        q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)
        if bank.mode == "read" and self.name in bank.tokens:
            k_ref, v_ref = bank.keys_values(self.name, attn)
            rows = bank.rows if bank.rows is not None else torch.zeros(h.shape[0], dtype=torch.long)
            rows = rows.to(h.device)
            k = torch.cat([k, k_ref.index_select(0, rows)], dim=1)
            v = torch.cat([v, v_ref.index_select(0, rows)], dim=1)
        out = self._sdpa(q, k, v, attn.heads)
        out = attn.to_out[0](out)
        return attn.to_out[1](out)

    def _sdpa(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        n, lq, inner = q.shape
        d = inner // heads
        q = q.view(n, lq, heads, d).transpose(1, 2)
        k = k.view(n, -1, heads, d).transpose(1, 2)
        v = v.view(n, -1, heads, d).transpose(1, 2)
        if self.query_chunk and lq > self.query_chunk:
            out = torch.cat([F.scaled_dot_product_attention(q[:, :, i:i + self.query_chunk], k, v)
                             for i in range(0, lq, self.query_chunk)], dim=2)
        else:
            out = F.scaled_dot_product_attention(q, k, v)
        return out.transpose(1, 2).reshape(n, lq, inner).to(q.dtype)


_STAGE = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def _forward_order(name: str) -> tuple:
    """UNet2DConditionModel registers up_blocks before mid_block; the forward pass runs down, mid, up."""
    parts = name.split(".")
    return (_STAGE.get(parts[0], 3),) + tuple(int(p) if p.isdigit() else 0 for p in parts[1:])


def self_attention_layers(unet: nn.Module) -> list[str]:
    """Names of the ``attn1`` layers in forward order (down, mid, up): 16 in SD1.5."""
    names = [name[: -len(".processor")] for name in unet.attn_processors if name.endswith("attn1.processor")]
    return sorted(names, key=_forward_order)


def install_reference_attention(unet: nn.Module, bank: ReferenceBank, query_chunk: int = 0) -> list[str]:
    """Give every attn1 of ``unet`` a :class:`ReferenceAttnProcessor` on ``bank``; other processors stay."""
    processors = dict(unet.attn_processors)
    names = self_attention_layers(unet)
    for name in names:
        processors[name + ".processor"] = ReferenceAttnProcessor(name, bank, query_chunk)
    unet.set_attn_processor(processors)
    return names

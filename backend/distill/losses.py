"""The distillation loss (docs/REFERENCE.md §4 "Training step"):
    L = L1(render, target) + lambda_lpips LPIPS(render, target) + lambda_sparsity mean_rays sqrt(opacity^2 + 0.01)
with the targets area-resized from the prior's resolution to the render resolution before the patch is cut."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from backend.distill.lpips import LPIPS


def resize_targets(targets: torch.Tensor, res: int) -> torch.Tensor:
    """float [B, 3, R, R] -> [B, 3, res, res] by area averaging (bilinear when upsampling)."""
    if targets.shape[-1] == res:
        return targets
    mode = "area" if targets.shape[-1] > res else "bilinear"
    return F.interpolate(targets, size=(res, res), mode=mode, **({} if mode == "area" else {"align_corners": False}))


def sparsity(opacity: torch.Tensor) -> torch.Tensor:
    """Mean over rays of sqrt(opacity^2 + 0.01) (threestudio's ``loss_sparsity``)."""
    return torch.sqrt(opacity ** 2 + 0.01).mean()


def distill_loss(render: torch.Tensor, target: torch.Tensor, opacity: torch.Tensor, lpips: Optional[LPIPS],
                 lpips_weight: float, sparsity_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """render, target float [B, 3, h, w] in 0..1; opacity float [B * h * w]. Returns (loss, parts for logging)."""
    l1 = (render - target).abs().mean()
    loss = l1 + sparsity_weight * sparsity(opacity)
    parts = {"l1": float(l1.detach())}
    if lpips is not None and lpips_weight > 0:
        lp = lpips(render, target).mean()
        loss = loss + lpips_weight * lp
        parts["lpips"] = float(lp.detach())
    parts["loss"] = float(loss.detach())
    return loss, parts

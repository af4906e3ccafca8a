"""Image metrics for held-out views: PSNR and SSIM (scikit-image's reference implementation)."""

from __future__ import annotations

import numpy as np
import torch


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """x, y float [..., H, W] in 0..1 -> PSNR in dB over all values."""
    mse = float(((x.float() - y.float()) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * float(np.log10(mse))


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM over images; x, y float [B, 3, H, W] in 0..1 (Gaussian window, sigma 1.5, as Wang et al.)."""
    from skimage.metrics import structural_similarity

    vals = [structural_similarity(a.permute(1, 2, 0).cpu().numpy(), b.permute(1, 2, 0).cpu().numpy(),
                                  channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False) for a, b in zip(x.float(), y.float())]
    return float(np.mean(vals))

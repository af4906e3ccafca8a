"""Noise schedules and the DDIM update used by distillation (docs/REFERENCE.md §3-4).

Notation (DDIM, Song et al. 2021, eq. 12 with eta = 0):
    ᾱ_t      alphas_cumprod[t] of SD1.5's DDPM schedule (scaled-linear betas 0.00085 -> 0.012, 1000 steps)
    x̂0      = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)
    x_prev  = sqrt(ᾱ_prev) x̂0 + sqrt(1 - ᾱ_prev) ε̂
The truncated schedule of the authors' distillation visits linspace(t, 0, k + 1)[:k] (rounded) and then "0": the last
step uses ᾱ_prev = alphas_cumprod[0] = 0.99915, not 1, so the final latent keeps 0.029 ε̂ (as the reference does).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from backend.prior.models import SD15_SCHEDULER_CONFIG


def alphas_cumprod(scheduler_config: dict[str, Any] = SD15_SCHEDULER_CONFIG,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[T] ᾱ of the config's DDPM schedule (the same betas PNDM and DDIM use); SD1.5's by default.

    The one place the schedule is computed. SD1.5's "scaled_linear" betas are computed here exactly as diffusers'
    ``DDPMScheduler`` does (bit-identical in float32; ``dtype`` float64 for references), without importing diffusers;
    any other schedule goes through diffusers."""
    c = scheduler_config
    if c.get("beta_schedule") == "scaled_linear" and c.get("trained_betas") is None:
        betas = torch.linspace(c.get("beta_start", 0.0001) ** 0.5, c.get("beta_end", 0.02) ** 0.5,
                               int(c.get("num_train_timesteps", 1000)), dtype=dtype) ** 2
        return torch.cumprod(1.0 - betas, dim=0)
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(c).alphas_cumprod.to(dtype)


def make_scheduler(sampler: str, scheduler_config: dict[str, Any]) -> Any:
    """2D generation: ``pndm`` (the reference, SD1.5's own config) or ``ddim`` (eta 0) from the same config."""
    from diffusers import DDIMScheduler, PNDMScheduler

    if sampler == "pndm":
        return PNDMScheduler.from_config(scheduler_config)
    if sampler == "ddim":
        return DDIMScheduler.from_config(scheduler_config)
    raise ValueError(f"sampler: expected pndm or ddim, received {sampler!r}")


def truncated_timesteps(t: int, n_steps: int) -> list[int]:
    """The authors' TruncatedDDIMScheduler: linspace(t, 0, n + 1)[:n], rounded (n = 1 -> [t])."""
    if not 0 <= t <= 999 or n_steps < 1:
        raise ValueError(f"truncated_timesteps: expected 0 <= t <= 999 and n_steps >= 1, received t={t}, n={n_steps}")
    return [int(v) for v in np.linspace(t, 0, n_steps + 1)[:n_steps].round()]


def add_noise(x0: torch.Tensor, noise: torch.Tensor, t: int, ac: torch.Tensor) -> torch.Tensor:
    """DDPM forward process q(x_t | x0): sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε (``DDPMScheduler.add_noise``)."""
    a = ac[t].to(x0.device, torch.float32)
    return (a.sqrt() * x0.float() + (1 - a).sqrt() * noise.float()).to(x0.dtype)


def ddim_step(x_t: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, ac: torch.Tensor) -> torch.Tensor:
    """One eta-0 DDIM step t -> t_prev in float32 (``t_prev = 0`` uses ᾱ_0, see the module note)."""
    a_t, a_prev = ac[t].to(x_t.device), ac[t_prev].to(x_t.device)
    x_t, eps = x_t.float(), eps.float()
    x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps

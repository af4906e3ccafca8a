"""The 2D diffusion prior of the Joker method (SD1.5 + reference UNet + normal-map ControlNet + text).

    prior = load_prior(PriorConfig(mode="joker"), device="cuda")
    image = prior.generate(prior.prepare_control(normals), "a man with a big smile",
                           reference=prior.prepare_reference(portrait))
    guidance = PriorGuidance(prior, normal_maps, portrait, prompt, cfg=19.0)   # backend.guidance.Guidance

Modules: ``models`` (architecture, official key layout), ``attention`` (reference attention processors),
``loading`` (the three modes), ``layout`` (models dir), ``sampling`` (schedules), ``prior`` (the sampler),
``guidance`` (distillation targets), ``fetch`` (downloads), ``tiny`` (tiny random weights for tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from shared.config.prior import PriorConfig
from shared.paths import models_dir as default_models_dir


def load_prior(config: PriorConfig, models_dir: Optional[Path] = None, device: Optional[str] = None):
    """Load the prior ``config`` asks for from ``models_dir`` (default ``shared.paths.models_dir()``) onto
    ``device`` (default: CUDA when present). Missing files raise ``backend.prior.errors.PriorError`` naming them."""
    import torch

    from backend.prior.loading import load_modules  # both import torch and diffusers: only when a prior loads
    from backend.prior.prior import JokerPrior

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    modules = load_modules(config.mode, Path(models_dir or default_models_dir()), config.base_model)
    return JokerPrior(modules, device=device, precision=config.precision, attention_slicing=config.attention_slicing,
                      compile=config.compile, controlnet_scale=config.controlnet_scale,
                      reference_cache=config.reference_cache, reference_attention=config.reference_attention)


__all__ = ["load_prior"]

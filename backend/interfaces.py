"""Interfaces between the distillation loop and the components it drives: the prior that makes targets (``Guidance``;
``backend.prior.guidance`` is the Joker prior's implementation of it), and the field that export reads.
Implementations: ``backend.prior`` (the Joker prior), the oracle prior (tests, demo), ``backend.field`` (the NeRF)."""

from __future__ import annotations

from typing import Optional, Protocol

import torch


class Guidance(Protocol):
    """Makes distillation targets. Conditioning (normal maps of every view, reference image, prompt, cfg) is bound
    when the guidance is built; a call names the views by index into that job's view list."""

    resolution: int  # targets are [B, 3, resolution, resolution] (512 for the Joker prior)

    def targets(self, images: torch.Tensor, views: torch.Tensor, t: int, n_steps: int,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Noise ``images`` to level ``t`` and denoise them.

        images:  float [B, 3, H, W] in 0..1, renders of the current field (upsampled to ``resolution`` inside).
        views:   long [B], indices into the job's views.
        t:       the noise level (0..999) of the fixed DDIM schedule.
        n_steps: 1 -> one DDIM step from t to 0 (Stage 1, effectively a CFG x0 prediction);
                 k -> truncated DDIM over linspace(t, 0, k + 1)[:k] (Stage 2).
        Returns float [B, 3, resolution, resolution] in 0..1.
        """
        ...


class Field(Protocol):
    """What export needs of a radiance field, in the head frame (metres, ``shared.conventions``)."""

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """points float [N, 3] -> volume density float [N] (>= 0)."""
        ...

    def colour(self, points: torch.Tensor) -> torch.Tensor:
        """points float [N, 3] -> albedo/radiance float [N, 3] in 0..1."""
        ...

"""The prior as distillation guidance (``backend.guidance.Guidance``): conditioning is bound at construction.

Per target update the distillation calls ``targets(renders, views, t, n_steps)``; the text embeddings, every view's
ControlNet input and the reference latents are prepared once here, and the reference features for level t are
computed once and shared by all views and calls at that t (docs/REFERENCE.md §4: cfg 19, [cond, uncond] = [caption, ""],
normal map in both branches, reference in both branches).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from backend.prior.prior import JokerPrior, out_of_memory_as_job_error
from shared.conventions import normals_to_control


class PriorGuidance:
    """Distillation targets from the Joker prior.

    normal_maps: uint8 [V, H, W, 3] normal maps of the job's views (``shared.conventions`` encoding).
    reference:   float [n_ref, 3, H, W] in 0..1 portraits, or None (no identity: text + normals only).
    max_batch:   views per prior call (memory bound); results do not depend on it.
    """

    def __init__(self, prior: JokerPrior, normal_maps: np.ndarray | torch.Tensor, reference: Optional[torch.Tensor],
                 prompt: str, negative_prompt: str = "", cfg: float = 19.0, max_batch: int = 8) -> None:
        maps = torch.as_tensor(np.asarray(normal_maps))
        if maps.ndim != 4 or maps.shape[-1] != 3 or maps.dtype != torch.uint8:
            raise ValueError(f"normal_maps: expected uint8 [V, H, W, 3], received {tuple(maps.shape)} {maps.dtype}")
        self.prior, self.cfg, self.max_batch = prior, cfg, max_batch
        self.resolution = prior.resolution
        self._maps = maps  # kept on the CPU as uint8: 400 views x 512^2 x 3 = 315 MB
        self.text = prior.text_pair(prompt, negative_prompt, cfg)  # [2 or 1, 77, D]
        self.reference = None if reference is None else prior.prepare_reference(reference)

    @property
    def counter(self):
        """The prior's :class:`backend.costs.CostCounter` (the distillation loop reports a run's share of it)."""
        return self.prior.counter

    @property
    def n_views(self) -> int:
        return self._maps.shape[0]

    def control(self, views: torch.Tensor) -> torch.Tensor:
        """ControlNet inputs [B, 3, R, R] of ``views`` (``normals_to_control`` then the prior's convention)."""
        maps = self._maps.index_select(0, views.cpu().long()).numpy()
        normals = torch.from_numpy(np.stack([normals_to_control(m) for m in maps]))
        return self.prior.prepare_control(normals)

    def targets(self, images: torch.Tensor, views: torch.Tensor, t: int, n_steps: int,
                generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """See ``backend.guidance.Guidance.targets``: renders [B, 3, H, W] 0..1 -> [B, 3, R, R] 0..1."""
        if images.shape[0] != views.shape[0]:
            raise ValueError(f"targets: {images.shape[0]} images but {views.shape[0]} view indices")
        if views.numel() and (int(views.min()) < 0 or int(views.max()) >= self.n_views):
            raise ValueError(f"views: expected indices in [0, {self.n_views}), received {views.tolist()}")
        out = []
        with out_of_memory_as_job_error():
            for i in range(0, images.shape[0], self.max_batch):
                sl = slice(i, i + self.max_batch)
                out.append(self.prior.denoise_images(images[sl], int(t), int(n_steps), self.text,
                                                     self.control(views[sl]), self.reference, self.cfg, generator))
        return torch.cat(out).to(images.device)

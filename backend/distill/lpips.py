"""LPIPS with a VGG16 backbone (Zhang et al. 2018), written in torch (no torchvision on the backend machines).

Matches torchmetrics' ``LearnedPerceptualImagePatchSimilarity(net_type="vgg", normalize=True)`` that the reference
uses: inputs in 0..1 -> 2x - 1 -> LPIPS scaling layer -> VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 ->
unit-normalise channels -> squared difference -> 1x1 linear heads (no bias) -> spatial mean -> sum over layers.

Weights: one safetensors file, ``<models_dir>/lpips/vgg16_lpips.safetensors``, with torchvision's VGG16 names
(``features.{i}.weight`` / ``.bias``, i the index in ``vgg16().features``) and the LPIPS heads as ``lin{k}.weight``
[1, C_k, 1, 1] (``lin{k}.model.1.weight`` as the lpips package names them is accepted too). docs/DISTILLATION.md
shows how to write that file from torchvision's and lpips' published weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

VGG16_WIDTHS = (64, 128, 256, 512, 512)
BLOCK_CONVS = (2, 2, 3, 3, 3)  # convolutions per VGG16 block; a tap after each block's last ReLU
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
WEIGHTS_NAME = Path("lpips") / "vgg16_lpips.safetensors"


class LPIPS(nn.Module):
    """LPIPS distance. ``widths``: per-block channels (VGG16's by default; tests pass tiny ones)."""

    def __init__(self, widths: Sequence[int] = VGG16_WIDTHS):
        super().__init__()
        self.widths = tuple(widths)
        layers: list[nn.Module] = []
        self.taps: list[int] = []  # index in ``features`` after which a feature map is taken
        c_in = 3
        for block, (width, n_conv) in enumerate(zip(self.widths, BLOCK_CONVS)):
            if block > 0:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(n_conv):
                layers += [nn.Conv2d(c_in, width, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = width
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)  # same indices as torchvision's vgg16().features[:30]
        self.lins = nn.ModuleList(nn.Conv2d(w, 1, 1, bias=False) for w in self.widths)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = (x * 2.0 - 1.0 - self.shift) / self.scale, []
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in self.taps:
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y float [B, 3, H, W] in 0..1 -> float [B] distances."""
        d = torch.zeros((), device=x.device)  # a 0-dim tensor adopts the dtype of what is added to it
        for lin, fx, fy in zip(self.lins, self._feats(x), self._feats(y)):
            d = d + lin((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return d

    def state_for_file(self) -> dict[str, torch.Tensor]:
        """The tensors in the weights-file layout (see the module docstring)."""
        sd = {f"features.{k}": v for k, v in self.features.state_dict().items()}
        sd.update({f"lin{k}.weight": lin.weight for k, lin in enumerate(self.lins)})
        return {k: v.detach().contiguous() for k, v in sd.items()}

    @classmethod
    def from_file(cls, path: Path) -> "LPIPS":
        """Load a weights file; the widths are read from it, so tiny test files load through the same code."""
        from safetensors.torch import load_file

        sd = load_file(str(path))
        sd = {k.replace(".model.1.weight", ".weight"): v for k, v in sd.items()}
        widths = tuple(int(sd[f"lin{k}.weight"].shape[1]) for k in range(len(BLOCK_CONVS)))
        model = cls(widths)
        model.features.load_state_dict({k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")})
        for k, lin in enumerate(model.lins):
            lin.weight.data.copy_(sd[f"lin{k}.weight"].view_as(lin.weight))
        return model


def find_lpips_weights(models_dir: Path) -> Optional[Path]:
    path = Path(models_dir) / WEIGHTS_NAME
    return path if path.is_file() else None

"""The prior's modules, how they are built from configs, and the official checkpoint's key layout (docs/REFERENCE.md §1).

``PriorModules`` is what every loading mode produces: CLIP text transformer, VAE, denoising UNet, reference UNet
(the same object as the denoiser in the training-free variant), an optional ControlNet, the scheduler config, and
how a Joker-convention normal map becomes this ControlNet's input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

# docs/REFERENCE.md §1: the official ControlNet = ControlNetModel.from_unet(ref_unet, conditioning_channels=3) with this
# conditioning embedding (three stride-2 stages: 512 px -> 64 latent px).
JOKER_CONTROL_EMBEDDING = (16, 32, 96, 256)
VAE_SCALING_FACTOR = 0.18215  # sd-vae-ft-mse, the diffusers default
OFFICIAL_PREFIXES = ("text_encoder.", "vae.", "unet.", "ref_unet.", "controlnet.")

# SD1.5's scheduler/scheduler_config.json (PNDM; the DDPM/DDIM betas are the same).
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None, "clip_sample": False, "prediction_type": "epsilon",
}


@dataclass(frozen=True)
class ControlEncoding:
    """How a normal map in the Joker convention (``shared.conventions``: x right, y up, z toward the camera,
    values in [-1, 1], background -1) becomes a ControlNet's input.

    sign:       per-channel sign applied first (control_v11p_sd15_normalbae reads red as pointing left).
    unit_range: False -> keep [-1, 1] (the Joker ControlNet); True -> map to [0, 1] (diffusers' ControlNet pipelines
                feed 0..1 images, which is what normalbae was trained on).
    """

    sign: tuple[float, float, float] = (1.0, 1.0, 1.0)
    unit_range: bool = False

    def apply(self, control: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] in [-1, 1]
        sign = torch.tensor(self.sign, dtype=control.dtype, device=control.device).view(1, 3, 1, 1)
        out = control * sign
        return (out + 1.0) * 0.5 if self.unit_range else out


JOKER_CONTROL = ControlEncoding()
NORMALBAE_CONTROL = ControlEncoding(sign=(-1.0, 1.0, 1.0), unit_range=True)


@dataclass
class PriorModules:
    tokenizer: Any
    text_encoder: nn.Module
    vae: nn.Module
    unet: nn.Module
    ref_unet: nn.Module
    controlnet: Optional[nn.Module]
    scheduler_config: dict[str, Any] = field(default_factory=lambda: dict(SD15_SCHEDULER_CONFIG))
    control: ControlEncoding = JOKER_CONTROL
    reference_noised: bool = False  # training-free: noise the reference latent to t like the denoiser's input
    name: str = "joker"

    def modules(self) -> dict[str, nn.Module]:
        mods = {"text_encoder": self.text_encoder, "vae": self.vae, "unet": self.unet}
        if self.ref_unet is not self.unet:
            mods["ref_unet"] = self.ref_unet
        if self.controlnet is not None:
            mods["controlnet"] = self.controlnet
        return mods


def joker_controlnet(unet: nn.Module, load_weights_from_unet: bool = True) -> nn.Module:
    """The official ControlNet architecture for ``unet``'s config (3 conditioning channels, rgb order)."""
    from diffusers import ControlNetModel

    return ControlNetModel.from_unet(unet, controlnet_conditioning_channel_order="rgb",
                                     conditioning_embedding_out_channels=JOKER_CONTROL_EMBEDDING,
                                     load_weights_from_unet=load_weights_from_unet, conditioning_channels=3)


# --- the official checkpoint's layout --------------------------------------------------------------------------------
# diffusers 0.16.1 (the authors' pin) still named the VAE's attention block query/key/value/proj_attn.
_LEGACY_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def rename_legacy_vae_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """VAE state dict with diffusers<0.17 attention names -> current names (1x1-conv weights flattened)."""
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if ".attentions." in key and len(parts) >= 2 and parts[-2] in _LEGACY_VAE_ATTENTION:
            key = ".".join(parts[:-2] + [_LEGACY_VAE_ATTENTION[parts[-2]], parts[-1]])
            if value.ndim == 4 and value.shape[-2:] == (1, 1):
                value = value[:, :, 0, 0]
        out[key] = value
    return out


def split_official(sd: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """Official state dict -> {component: state dict} by prefix, and the keys that match no component."""
    parts: dict[str, dict[str, torch.Tensor]] = {p[:-1]: {} for p in OFFICIAL_PREFIXES}
    unknown = []
    for key, value in sd.items():
        prefix = next((p for p in OFFICIAL_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            parts[prefix[:-1]][key[len(prefix):]] = value
    # transformers < 4.31 saved position_ids as a persistent buffer; newer versions do not expect it.
    parts["text_encoder"].pop("embeddings.position_ids", None)
    return parts, unknown


def text_encoder_keys(sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The checkpoint stores CLIPTextTransformer keys (no ``text_model.`` level); add it where the model has one."""
    nested = any(k.startswith("text_model.") for k in model.state_dict())
    if not nested:
        return {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in sd.items()}
    return {k if k.startswith("text_model.") else "text_model." + k: v for k, v in sd.items()}


def official_state_dict(text_encoder: nn.Module, vae: nn.Module, unet: nn.Module, ref_unet: nn.Module,
                        controlnet: nn.Module, legacy: bool = True) -> dict[str, torch.Tensor]:
    """A state dict in the official checkpoint's layout (tests and benchmarks build one from tiny modules).

    ``legacy`` reproduces what the authors' pinned libraries wrote: old VAE attention names and a persistent
    ``text_encoder.embeddings.position_ids``.
    """
    sd: dict[str, torch.Tensor] = {}
    te = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in text_encoder.state_dict().items()}
    if legacy:
        n_pos = te["embeddings.position_embedding.weight"].shape[0]
        te["embeddings.position_ids"] = torch.arange(n_pos).unsqueeze(0)
    vae_sd = vae.state_dict()
    if legacy:
        back = {v: k for k, v in _LEGACY_VAE_ATTENTION.items()}
        vae_sd = {_legacy_vae_key(k, back): v for k, v in vae_sd.items()}
    for prefix, part in (("text_encoder.", te), ("vae.", vae_sd), ("unet.", unet.state_dict()),
                         ("ref_unet.", ref_unet.state_dict()), ("controlnet.", controlnet.state_dict())):
        sd.update({prefix + k: v.detach().clone() for k, v in part.items()})
    return sd


def _legacy_vae_key(key: str, back: dict[str, str]) -> str:
    if ".attentions." not in key:
        return key
    for new, old in back.items():
        if f".{new}." in key:
            return key.replace(f".{new}.", f".{old}.")
    return key

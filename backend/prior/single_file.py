"""An artist's single-file SD1.5 fine-tune (original LDM / A1111 layout, as Civitai ships them) for the free prior.

Keys: ``model.diffusion_model.*`` (UNet, required), ``first_stage_model.*`` (VAE) and ``cond_stage_model.transformer.*``
(CLIP text encoder); the last two are optional and fall back to the stock SD1.5 folder's weights. Architectures come
from the stock folder's configs; key layouts are converted by diffusers' own converters
(``diffusers.loaders.single_file_utils``), which touch no network. Every component loads strictly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from backend.prior.checkpoint import CheckpointError, _empty, _key_list, load_strict, read_checkpoint
from backend.prior.models import text_encoder_keys

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."
EMA_PREFIX = "model_ema."

HINT = ("the free prior takes a full SD1.5 checkpoint (.safetensors or .ckpt with model.diffusion_model.* UNet keys, "
        "'SD 1.5' as base model on Civitai) or an SD1.5 diffusers folder")


def read_single_file(path: Path) -> dict[str, torch.Tensor]:
    """{key: tensor} of a ``.safetensors`` file, or of a ``.ckpt/.pt/.bin`` pickle read tensor-only (a pickle that
    carries code is refused; a top-level ``state_dict`` is unwrapped)."""
    if path.suffix.lower() != ".safetensors":
        return read_checkpoint(path, "the file holds more than tensors (possibly code) or is damaged; use the model's "
                                     ".safetensors download instead")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {path} as a .safetensors file: {e}", "download the file again") from e


def check_sd15(sd: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse what is not a full SD1.5 checkpoint, naming what it is instead."""
    def has(fragment: str, start: bool = True) -> bool:
        return any(k.startswith(fragment) if start else fragment in k for k in sd)

    what = None
    if has("conditioner.embedders."):
        what = "an SDXL checkpoint (conditioner.embedders.* keys); SDXL is not supported, SD1.5 only"
    elif has("cond_stage_model.model."):
        what = ("an SD2.x checkpoint (OpenCLIP text encoder keys cond_stage_model.model.*); SD2.x is not supported, "
                "SD1.5 only")
    elif has(UNET_PREFIX):
        return
    elif has("lora_", start=False) or has(".lora.", start=False) or has("lycoris_"):
        what = "a LoRA/LyCORIS (lora_* keys), not a full checkpoint; the free prior needs a full SD1.5 model"
    elif has(EMA_PREFIX):
        what = f"EMA weights only (model_ema.* keys) with no `{UNET_PREFIX}` keys; re-save it with 'EMA only' pruning"
    else:
        prefixes = sorted({k.split(".")[0] + "." for k in sd})
        what = f"not an original-format SD1.5 checkpoint: no `{UNET_PREFIX}` keys (key prefixes: {_key_list(prefixes)})"
    raise CheckpointError(f"prior.base_model: {path} is {what}", HINT)


def _as_dtype_of(module: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 / bf16 files are cast to the module's dtype (fp32; JokerPrior casts for the device later)."""
    dtype = next(module.parameters()).dtype
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}


def _unet(sd: dict[str, torch.Tensor], sd_dir: Path) -> nn.Module:
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    config = UNet2DConditionModel.load_config(sd_dir / "unet")
    if any(k.startswith(EMA_PREFIX) for k in sd):
        # Both EMA (model_ema.*) and regular weights: we take the regular ones, which A1111 and ComfyUI load, so the
        # prior runs the weights the artist tuned and previewed ('EMA-only' files store theirs as the regular keys).
        log.info("single file: using model.diffusion_model.* (not the model_ema.* copy), as A1111/ComfyUI do")
    unet = _empty(lambda: UNet2DConditionModel.from_config(config))
    converted = convert_ldm_unet_checkpoint(sd, config, extract_ema=False)
    return load_strict(unet, _as_dtype_of(unet, converted), f"unet ({UNET_PREFIX}*)", HINT)


def _vae(sd: dict[str, torch.Tensor], sd_dir: Path) -> Optional[nn.Module]:
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if not any(k.startswith(VAE_PREFIX) for k in sd):
        return None
    config = AutoencoderKL.load_config(sd_dir / "vae")
    vae = _empty(lambda: AutoencoderKL.from_config(config))
    converted = convert_ldm_vae_checkpoint({k: v for k, v in sd.items() if k.startswith(VAE_PREFIX)}, config)
    return load_strict(vae, _as_dtype_of(vae, converted), f"vae ({VAE_PREFIX}*)", HINT)


def _text_encoder(sd: dict[str, torch.Tensor], sd_dir: Path) -> Optional[nn.Module]:
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel

    if not any(k.startswith(CLIP_PREFIX) for k in sd):
        return None
    text_encoder = _empty(lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(sd_dir / "text_encoder")))
    converted = text_encoder_keys(convert_ldm_clip_checkpoint(sd), text_encoder)
    # Older transformers saved position_ids as a persistent buffer (often int64, in some merges drifted floats);
    # current models rebuild it, so it is dropped unless the model expects it.
    expected = text_encoder.state_dict()
    converted = {k: v for k, v in converted.items() if not k.endswith("embeddings.position_ids") or k in expected}
    return load_strict(text_encoder, _as_dtype_of(text_encoder, converted), f"text_encoder ({CLIP_PREFIX}*)", HINT)


def load_single_file(path: Path, sd_dir: Path) -> dict[str, nn.Module]:
    """UNet, VAE and text encoder of the single file at ``path`` over the stock SD1.5 folder ``sd_dir`` (its configs,
    and its VAE / text encoder where the file has none)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    sd = read_single_file(Path(path))
    check_sd15(sd, Path(path))
    vae, text_encoder = _vae(sd, sd_dir), _text_encoder(sd, sd_dir)
    if vae is None:
        vae = AutoencoderKL.from_pretrained(sd_dir / "vae")
    if text_encoder is None:
        text_encoder = CLIPTextModel.from_pretrained(sd_dir / "text_encoder")
    return {"unet": _unet(sd, sd_dir), "vae": vae, "text_encoder": text_encoder}

"""Loading the prior's modules for each mode (docs/REFERENCE.md §1 for the official checkpoint's traps).

joker: the official checkpoint (a torch pickle, read with ``weights_only=True``) for text encoder, UNets and
       ControlNet; architecture configs, tokenizer and scheduler from the SD1.5 folder; the VAE from sd-vae-ft-mse
       (what the authors' distillation does; the checkpoint's own ``vae.*`` keys can be loaded with
       ``vae_source="checkpoint"``, their old attention names renamed).
free:  any SD1.5 diffusers folder, or an artist's single-file fine-tune over the stock folder (``single_file``),
       + control_v11p_sd15_normalbae; reference attention runs on the same UNet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from backend.prior import layout
from backend.prior.models import (JOKER_CONTROL, NORMALBAE_CONTROL, PriorModules, joker_controlnet,
                                  rename_legacy_vae_keys, split_official, text_encoder_keys)
# CheckpointError and read_checkpoint are re-exported: callers know them from here.
from backend.prior.checkpoint import CheckpointError, _empty, _key_list, load_strict, read_checkpoint  # noqa: F401
from backend.prior.errors import PriorError
from backend.prior.single_file import load_single_file


def _json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def load_joker(models_dir: Path, base_model: str = layout.SD15_DIR, vae_source: str = "ft-mse") -> PriorModules:
    """The official prior: checkpoint + SD1.5 configs/tokenizer/scheduler + sd-vae-ft-mse."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if layout.is_single_file(base_model):  # an error rather than silently running other weights than asked for
        raise PriorError(f"prior.base_model: {base_model!r} is a single-file fine-tune, which only the free prior uses; "
                         "the joker prior's UNets, ControlNet and text encoder all come from the authors' checkpoint",
                         f'set prior.mode = "free" to use the fine-tune, or prior.base_model = "{layout.SD15_DIR}" '
                         "for the joker prior", code="invalid_field")
    layout.require_files("joker", models_dir, base_model)
    sd_dir = layout.base_model_dir(models_dir, base_model)
    parts, unknown = split_official(read_checkpoint(Path(models_dir) / layout.JOKER_CHECKPOINT))
    if unknown:
        raise CheckpointError(f"checkpoint keys outside {', '.join(p for p in parts)}: [{_key_list(unknown)}]")
    unet_config = UNet2DConditionModel.load_config(sd_dir / "unet")
    text_config = CLIPTextConfig.from_pretrained(sd_dir / "text_encoder")
    text_encoder = _empty(lambda: CLIPTextModel(text_config))
    load_strict(text_encoder, text_encoder_keys(parts["text_encoder"], text_encoder), "text_encoder")
    unets = {}
    for name in ("unet", "ref_unet"):
        unets[name] = load_strict(_empty(lambda: UNet2DConditionModel.from_config(unet_config)), parts[name], name)
    controlnet = _empty(lambda: joker_controlnet(unets["ref_unet"], load_weights_from_unet=False))
    load_strict(controlnet, parts["controlnet"], "controlnet")
    if vae_source == "checkpoint":
        vae = _empty(lambda: AutoencoderKL.from_config(AutoencoderKL.load_config(Path(models_dir) / layout.VAE_DIR)))
        load_strict(vae, rename_legacy_vae_keys(parts["vae"]), "vae")
    else:
        vae = AutoencoderKL.from_pretrained(Path(models_dir) / layout.VAE_DIR)
    return PriorModules(tokenizer=CLIPTokenizer.from_pretrained(sd_dir / "tokenizer"), text_encoder=text_encoder,
                        vae=vae, unet=unets["unet"], ref_unet=unets["ref_unet"], controlnet=controlnet,
                        scheduler_config=_json(sd_dir / "scheduler" / "scheduler_config.json"),
                        control=JOKER_CONTROL, reference_noised=False, name="joker")


def load_free(models_dir: Path, base_model: str = layout.SD15_DIR) -> PriorModules:
    """Training-free prior: an SD1.5 diffusers folder (or a single-file fine-tune over the stock one) + normalbae
    ControlNet; reference attention on the same UNet."""
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    layout.require_files("free", models_dir, base_model)
    single = layout.single_file(models_dir, base_model)
    sd_dir = Path(models_dir) / layout.SD15_DIR if single else layout.base_model_dir(models_dir, base_model)
    if single:
        parts = load_single_file(single, sd_dir)
    else:
        parts = {"unet": UNet2DConditionModel.from_pretrained(sd_dir / "unet"),
                 "text_encoder": CLIPTextModel.from_pretrained(sd_dir / "text_encoder"),
                 "vae": AutoencoderKL.from_pretrained(sd_dir / "vae")}
    return PriorModules(tokenizer=CLIPTokenizer.from_pretrained(sd_dir / "tokenizer"),
                        text_encoder=parts["text_encoder"], vae=parts["vae"], unet=parts["unet"],
                        ref_unet=parts["unet"],
                        controlnet=ControlNetModel.from_pretrained(Path(models_dir) / layout.CONTROLNET_DIR),
                        scheduler_config=_json(sd_dir / "scheduler" / "scheduler_config.json"),
                        control=NORMALBAE_CONTROL, reference_noised=True, name="free")


def load_modules(mode: str, models_dir: Path, base_model: str = layout.SD15_DIR) -> PriorModules:
    if mode == "joker":
        return load_joker(models_dir, base_model)
    if mode == "free":
        return load_free(models_dir, base_model)
    raise PriorError(f"prior.mode: expected joker or free, received {mode!r}",
                     "the oracle prior is a test prior for distillation and has no 2D model", code="invalid_field")

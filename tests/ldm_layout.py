"""Test helper: diffusers state dicts -> the original LDM / A1111 single-file layout (what Civitai files hold), written
independently of diffusers' converters so that loading through them is a real check.

LDM UNet: ``input_blocks.0.0`` is conv_in; then per down level ``layers_per_block`` blocks ``[ResBlock,
SpatialTransformer]`` and (except the last level) one ``Downsample`` block (``.0.op``); ``middle_block.{0,1,2}`` =
ResBlock, SpatialTransformer, ResBlock; per up level ``layers_per_block + 1`` output blocks ``[ResBlock,
SpatialTransformer, Upsample]`` (the upsampler is the last module of the level's last block). ResBlock layers:
``in_layers.{0 norm, 2 conv}``, ``emb_layers.1``, ``out_layers.{0 norm, 3 conv}``, ``skip_connection``.
LDM VAE: ``{encoder,decoder}.{down,up}.{level}.block.{i}`` (decoder levels numbered from the lowest resolution up,
i.e. reversed against diffusers' up_blocks), ``mid.block_{1,2}``, ``mid.attn_1.{norm,q,k,v,proj_out}`` with 1x1 conv
weights [C, C, 1, 1].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
          "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_prefixes(config: dict[str, Any]) -> dict[str, str]:
    """diffusers module prefix -> LDM module prefix for a UNet2DConditionModel config."""
    per_level, levels = config["layers_per_block"], len(config["block_out_channels"])
    out = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
           "mid_block.resnets.0": "middle_block.0", "mid_block.attentions.0": "middle_block.1",
           "mid_block.resnets.1": "middle_block.2"}
    block = 1
    for level in range(levels):
        for i in range(per_level):
            out[f"down_blocks.{level}.resnets.{i}"] = f"input_blocks.{block}.0"
            out[f"down_blocks.{level}.attentions.{i}"] = f"input_blocks.{block}.1"
            block += 1
        if level < levels - 1:
            out[f"down_blocks.{level}.downsamplers.0.conv"] = f"input_blocks.{block}.0.op"
            block += 1
    block = 0
    for level in range(levels):
        for i in range(per_level + 1):
            out[f"up_blocks.{level}.resnets.{i}"] = f"output_blocks.{block}.0"
            out[f"up_blocks.{level}.attentions.{i}"] = f"output_blocks.{block}.1"
            block += 1
        if level < levels - 1:
            slot = 2 if "CrossAttn" in config["up_block_types"][level] else 1
            out[f"up_blocks.{level}.upsamplers.0.conv"] = f"output_blocks.{block - 1}.{slot}.conv"
    return out


def _rename(key: str, prefixes: dict[str, str], inner: dict[str, str]) -> str:
    """Longest matching module prefix replaced; ``inner`` renames the first layer name after a ResBlock prefix."""
    prefix = max((p for p in prefixes if key.startswith(p + ".")), key=len)
    rest = key[len(prefix) + 1:]
    for old, new in inner.items():
        if ".resnets." in prefix and rest.startswith(old + "."):
            rest = new + rest[len(old):]
            break
    return f"{prefixes[prefix]}.{rest}"


def ldm_unet(unet: nn.Module) -> dict[str, torch.Tensor]:
    prefixes = _unet_prefixes(unet.config)
    return {"model.diffusion_model." + _rename(k, prefixes, RESNET): v for k, v in unet.state_dict().items()}


def _vae_prefixes(config: dict[str, Any]) -> dict[str, str]:
    levels = len(config["block_out_channels"])
    out = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for part in ("encoder", "decoder"):
        out |= {f"{part}.conv_in": f"{part}.conv_in", f"{part}.conv_out": f"{part}.conv_out",
                f"{part}.conv_norm_out": f"{part}.norm_out", f"{part}.mid_block.resnets.0": f"{part}.mid.block_1",
                f"{part}.mid_block.resnets.1": f"{part}.mid.block_2",
                f"{part}.mid_block.attentions.0": f"{part}.mid.attn_1"}
    for level in range(levels):
        up = levels - 1 - level  # LDM numbers decoder levels from the lowest resolution
        for i in range(config["layers_per_block"] + 1):
            out[f"encoder.down_blocks.{level}.resnets.{i}"] = f"encoder.down.{level}.block.{i}"
            out[f"decoder.up_blocks.{level}.resnets.{i}"] = f"decoder.up.{up}.block.{i}"
        out[f"encoder.down_blocks.{level}.downsamplers.0.conv"] = f"encoder.down.{level}.downsample.conv"
        out[f"decoder.up_blocks.{level}.upsamplers.0.conv"] = f"decoder.up.{up}.upsample.conv"
    return out


def ldm_vae(vae: nn.Module) -> dict[str, torch.Tensor]:
    prefixes, out = _vae_prefixes(vae.config), {}
    for key, value in vae.state_dict().items():
        name = _rename(key, prefixes, {"conv_shortcut": "nin_shortcut"})
        if ".mid.attn_1." in name:
            layer = name.split(".mid.attn_1.")[1].rsplit(".", 1)[0]
            name = name.replace(f"attn_1.{layer}.", f"attn_1.{VAE_ATTENTION[layer]}.")
            value = value[:, :, None, None] if value.ndim == 2 else value  # linear -> 1x1 conv [C, C, 1, 1]
        out["first_stage_model." + name] = value
    return out


def ldm_clip(text_encoder: nn.Module, position_ids: bool = True) -> dict[str, torch.Tensor]:
    """``cond_stage_model.transformer.text_model.*`` (transformers >= 4.x layout), with the stale position_ids
    buffer that most SD1.5 files carry."""
    sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in text_encoder.state_dict().items()}
    if position_ids:
        n = sd["text_model.embeddings.position_embedding.weight"].shape[0]
        sd["text_model.embeddings.position_ids"] = torch.arange(n)[None]
    return {"cond_stage_model.transformer." + k: v for k, v in sd.items()}


def ldm_checkpoint(modules: dict[str, nn.Module], parts: tuple[str, ...] = ("unet", "vae", "text_encoder"),
                   dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A single-file checkpoint of ``modules``' chosen parts, contiguous (safetensors needs it), floats in ``dtype``."""
    make = {"unet": ldm_unet, "vae": ldm_vae, "text_encoder": ldm_clip}
    sd = {k: v for part in parts for k, v in make[part](modules[part]).items()}
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous().clone() for k, v in sd.items()}

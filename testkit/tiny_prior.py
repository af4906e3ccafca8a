"""Tiny random prior components, written to disk in the models-dir layout so tests and the CPU benchmark load them
through the same code as the real weights (docs/MODELS.md). Nothing here downloads anything.

The tiny configuration keeps every structural feature of SD1.5 that the prior depends on: a VAE with a factor-8
downsampling and a mid-block attention (legacy key names), cross-attention blocks with attn1 layers in the down, mid
and up paths, a CLIP text transformer with a byte-level BPE tokenizer, and the official ControlNet embedding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from backend.prior import layout
from backend.prior.models import SD15_SCHEDULER_CONFIG, joker_controlnet, official_state_dict

TINY_UNET: dict[str, Any] = dict(
    sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
)
TINY_VAE: dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8, sample_size=64,
    block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
)
TINY_CLIP: dict[str, Any] = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                                 max_position_embeddings=77, projection_dim=32)
TINY_RESOLUTION = 64  # image pixels (8 latent pixels)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to a printable unicode character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def tiny_tokenizer() -> Any:
    """A real CLIPTokenizer over the 256 byte symbols (no merges): every character is one token."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab[s] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def save_tokenizer_files(tokenizer: Any, folder: Path) -> None:
    """Write the tokenizer the way SD1.5 ships it (vocab.json, merges.txt and two small JSON files)."""
    folder.mkdir(parents=True, exist_ok=True)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (folder / "vocab.json").write_text(json.dumps(tokenizer.get_vocab()))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def _randomize_zeros(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Zero-initialised layers (ControlNet's zero convs) get small random weights so tests see their effect."""
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() and not p.any():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)
    return module


def tiny_modules(seed: int = 0) -> dict[str, nn.Module]:
    """Random tiny text_encoder, vae, unet, ref_unet and controlnet (official ControlNet architecture)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    clip = CLIPTextConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **TINY_CLIP)
    mods: dict[str, nn.Module] = {"text_encoder": CLIPTextModel(clip), "vae": AutoencoderKL(**TINY_VAE),
                                  "unet": UNet2DConditionModel(**TINY_UNET), "ref_unet": UNet2DConditionModel(**TINY_UNET)}
    gen = torch.Generator().manual_seed(seed + 1)
    mods["controlnet"] = _randomize_zeros(joker_controlnet(mods["ref_unet"]), gen)
    return {k: m.eval() for k, m in mods.items()}


def save_tiny_models(models_dir: Path, seed: int = 0) -> Path:
    """Write tiny random weights for every mode into ``models_dir`` (layout of docs/MODELS.md); returns it.

    - ``stable-diffusion-v1-5/``: tokenizer, scheduler, text_encoder, unet, vae (diffusers folder, free mode)
    - ``sd-vae-ft-mse/``: the VAE both modes decode with in joker mode
    - ``control_v11p_sd15_normalbae/``: a ControlNet for free mode
    - ``joker/bfm_ft_NersembleCelebvtext_230000.bin``: the official layout, legacy key names included
    """
    models_dir = Path(models_dir)
    sd_dir = models_dir / layout.SD15_DIR
    base = tiny_modules(seed)
    save_tokenizer_files(tiny_tokenizer(), sd_dir / "tokenizer")
    (sd_dir / "scheduler").mkdir(parents=True, exist_ok=True)
    (sd_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG, indent=2))
    for name in ("text_encoder", "unet", "vae"):
        base[name].save_pretrained(sd_dir / name)
    base["controlnet"].save_pretrained(models_dir / layout.CONTROLNET_DIR)
    joker = tiny_modules(seed + 100)
    joker["vae"].save_pretrained(models_dir / layout.VAE_DIR)
    ckpt = models_dir / layout.JOKER_CHECKPOINT
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save(official_state_dict(**joker), ckpt)
    return models_dir


def save_joker_layout(models_dir: Path, modules: dict[str, nn.Module], dtype: Optional[torch.dtype] = None) -> Path:
    """Write ``modules`` (text_encoder, vae, unet, ref_unet, controlnet; any size) as joker mode reads them: the
    official checkpoint, the SD1.5 folder's configs, tokenizer and scheduler, and the VAE folder. ``dtype`` (e.g.
    bf16) halves what a large random-weight prior writes; the loader casts to the prior's dtype anyway."""
    models_dir = Path(models_dir)
    sd_dir = models_dir / layout.SD15_DIR
    save_tokenizer_files(tiny_tokenizer(), sd_dir / "tokenizer")
    (sd_dir / "scheduler").mkdir(parents=True, exist_ok=True)
    (sd_dir / "scheduler" / "scheduler_config.json").write_text(json.dumps(SD15_SCHEDULER_CONFIG, indent=2))
    modules["text_encoder"].config.save_pretrained(sd_dir / "text_encoder")
    modules["unet"].save_config(sd_dir / "unet")
    modules["vae"].save_pretrained(models_dir / layout.VAE_DIR)
    state = official_state_dict(**modules)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    ckpt = models_dir / layout.JOKER_CHECKPOINT
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.cpu().contiguous() for k, v in state.items()}, ckpt)
    return models_dir


def ensure_tiny_models(models_dir: Path, seed: int = 0) -> Path:
    """:func:`save_tiny_models` once per folder (tests in one session share it)."""
    models_dir = Path(models_dir)
    marker = models_dir / ".tiny-complete"
    if not marker.exists():
        save_tiny_models(models_dir, seed)
        marker.write_text(str(seed))
    return models_dir

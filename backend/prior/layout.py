"""The models-dir layout (docs/MODELS.md): which files each prior mode reads, where they come from, and the error
that names the missing ones and the command that fetches them. ``shared.paths.models_dir()`` is the root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from backend.prior.errors import PriorError
from shared.paths import models_dir as default_models_dir

SD15_DIR = "stable-diffusion-v1-5"
VAE_DIR = "sd-vae-ft-mse"
CONTROLNET_DIR = "control_v11p_sd15_normalbae"
JOKER_CHECKPOINT = "joker/bfm_ft_NersembleCelebvtext_230000.bin"
CHECKSUMS = "checksums.json"  # sha256 of every fetched file, written by fetch-models

SD15_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
VAE_REPO = "stabilityai/sd-vae-ft-mse"
CONTROLNET_REPO = "lllyasviel/control_v11p_sd15_normalbae"
# The authors' share (docs/REFERENCE.md §1): assets.zip holds the checkpoint at this member path.
JOKER_SHARE_URL = "https://keeper.mpdl.mpg.de/d/ef36c2fe25944366a088/files/?p=%2Fassets.zip&dl=1"
JOKER_ZIP_MEMBER = "assets/joker/pretrained/bfm_ft_NersembleCelebvtext_230000.bin"

# What joker mode reads from the SD1.5 folder: tokenizer, scheduler and the architecture configs (the checkpoint
# holds all weights).
SD15_CONFIG_FILES = ("tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
                     "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json",
                     "text_encoder/config.json", "unet/config.json")
SD15_WEIGHT_FILES = ("text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                     "vae/config.json", "vae/diffusion_pytorch_model.safetensors")
DIFFUSERS_MODEL_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
SD15_UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
# An artist's fine-tune as one original-format (LDM / A1111) file instead of a diffusers folder (free mode only).
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")


@dataclass(frozen=True)
class ModelFile:
    """One file of the layout: its place under the models dir and where fetch-models gets it."""

    path: str  # relative to the models dir
    repo: Optional[str] = None  # Hugging Face repo (file = path inside it), or None for the authors' share
    repo_path: str = ""


def base_model_dir(models_dir: Path, base_model: str) -> Path:
    """The SD1.5 folder (or single file): ``base_model`` is a name under the models dir or an absolute path."""
    p = Path(base_model).expanduser()
    return p if p.is_absolute() else Path(models_dir) / base_model


def is_single_file(base_model: str) -> bool:
    """``base_model`` names one original-format checkpoint file (by its suffix) rather than a diffusers folder."""
    return Path(base_model).suffix.lower() in SINGLE_FILE_SUFFIXES


def single_file(models_dir: Path, base_model: str) -> Optional[Path]:
    """The single-file checkpoint ``base_model`` names (same rule as :func:`base_model_dir`), or None for a folder."""
    return base_model_dir(models_dir, base_model) if is_single_file(base_model) else None


def mode_files(mode: str, base_model: str = SD15_DIR) -> list[ModelFile]:
    """The files ``mode`` (joker | free) needs, relative to the models dir (absolute for a base model path).

    A single-file base model still needs the stock SD1.5 folder (tokenizer, scheduler, configs, and the VAE and text
    encoder weights a file without its own falls back to), but not its UNet weights; joker mode never reads it."""
    single = is_single_file(base_model)
    sd_dir = SD15_DIR if single else base_model
    sd_files = SD15_CONFIG_FILES + (SD15_WEIGHT_FILES if mode == "free" else ())
    sd_files = tuple(f for f in sd_files if not (single and f == SD15_UNET_WEIGHTS))
    files = [ModelFile(f"{sd_dir}/{f}", SD15_REPO if sd_dir == SD15_DIR else None, f) for f in sd_files]
    if mode == "joker":
        files += [ModelFile(f"{VAE_DIR}/{f}", VAE_REPO, f) for f in DIFFUSERS_MODEL_FILES]
        files.append(ModelFile(JOKER_CHECKPOINT))
    elif mode == "free":
        files += [ModelFile(f"{CONTROLNET_DIR}/{f}", CONTROLNET_REPO, f) for f in DIFFUSERS_MODEL_FILES]
        files += [ModelFile(base_model)] if single else []
    else:
        raise ValueError(f"mode: expected joker or free, received {mode!r}")
    return files


def fetch_command(mode: str, models_dir: Path) -> str:
    extra = "" if Path(models_dir) == default_models_dir() else f" --models-dir {models_dir}"
    return f"joker-head fetch-models --mode {mode}{extra}"


def missing_files(mode: str, models_dir: Path, base_model: str = SD15_DIR) -> list[Path]:
    """Absolute paths of the files ``mode`` needs that are not on disk."""
    out = []
    for f in mode_files(mode, base_model):
        p = Path(f.path).expanduser()
        p = p if p.is_absolute() else Path(models_dir) / p
        if not p.is_file():
            out.append(p)
    return out


def require_files(mode: str, models_dir: Path, base_model: str = SD15_DIR) -> None:
    """Raise a :class:`PriorError` that lists exactly which files are missing, where, and how to fetch them."""
    missing = missing_files(mode, models_dir, base_model)
    if not missing:
        return
    listing = "\n".join(f"  {p}" for p in missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
    raise PriorError(f"the {mode} prior is missing {len(missing)} file(s) under {models_dir}:\n{listing}",
                     missing_hint(mode, models_dir, base_model, missing), code="missing_weights")


def missing_hint(mode: str, models_dir: Path, base_model: str, missing: list[Path]) -> str:
    """What to do about ``missing``: fetch the stock parts, and/or fix the path of the user's own base model."""
    own = single_file(models_dir, base_model) if mode == "free" else None
    if own is not None and own in missing:
        hint = (f"prior.base_model {base_model!r} is your fine-tune's file and is not at {own}: give its absolute path "
                f"or put it under {models_dir} (a .safetensors or .ckpt SD1.5 checkpoint)")
        if len(missing) == 1:
            return hint
        return hint + f"; run `{fetch_command(mode, models_dir)}` for the stock SD1.5 parts it is used with"
    hint = f"run `{fetch_command(mode, models_dir)}`"
    if own is not None:
        hint += " (it fetches the stock SD1.5 tokenizer, scheduler, configs, VAE and text encoder the file needs)"
    elif Path(base_model).is_absolute() or base_model != SD15_DIR:
        hint += (f" (it fetches the stock parts; the base model {base_model!r} must be a diffusers SD1.5 folder "
                 "you provide)")
    return hint

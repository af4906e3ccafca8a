"""fetch-models, check-models: the prior's weights in the models dir (docs/MODELS.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.download import DownloadError
from backend.prior import layout
from backend.prior.fetch import HF_ENDPOINT, fetch_models
from shared.paths import models_dir


def _models_dir(args: argparse.Namespace) -> Path:
    return Path(args.models_dir).expanduser() if args.models_dir else models_dir()


def _fetch(args: argparse.Namespace) -> int:
    root = _models_dir(args)
    try:
        paths = fetch_models(args.mode, root, hf_endpoint=args.hf_endpoint,
                             share_url=args.joker_url or layout.JOKER_SHARE_URL, keep_archive=args.keep_archive)
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{len(paths)} files in place under {root}")
    return 0


def _check(args: argparse.Namespace) -> int:
    root, status = _models_dir(args), 0
    single = layout.is_single_file(args.base_model)
    for mode in ("joker", "free"):
        missing = layout.missing_files(mode, root, args.base_model)
        hint = layout.missing_hint(mode, root, args.base_model, missing)
        print(f"{mode}: " + ("ready" if not missing else f"{len(missing)} file(s) missing — {hint}"))
        for p in missing:
            print(f"  missing {p}")
        if single and mode == "joker":  # load_joker refuses a single-file base model
            print(f"  note: the single file {args.base_model} is used by the free mode only (joker runs the "
                  "authors' checkpoint)")
        status |= (bool(missing) or (single and mode == "joker")) and mode == args.mode
    return int(status)


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("fetch-models", help="download the prior's weights (SD1.5, VAE, ControlNet, Joker checkpoint)")
    p.add_argument("--mode", choices=("joker", "free", "all"), default="joker",
                   help="joker: the authors' checkpoint + SD1.5 configs + sd-vae-ft-mse; free: SD1.5 + normal ControlNet")
    p.add_argument("--models-dir", help="where to put them (default: shared.paths.models_dir(), $JOKER_HEAD_MODELS)")
    p.add_argument("--hf-endpoint", default=HF_ENDPOINT, help="Hugging Face endpoint (default $HF_ENDPOINT or the hub)")
    p.add_argument("--joker-url", help="URL of the authors' assets.zip (default: their keeper.mpdl.mpg.de share)")
    p.add_argument("--keep-archive", action="store_true", help="keep assets.zip after extracting the checkpoint")
    p.set_defaults(func=_fetch)
    c = sub.add_parser("check-models", help="list which prior weights are present and which are missing")
    c.add_argument("--mode", choices=("joker", "free"), default="joker", help="the mode whose readiness sets the exit code")
    c.add_argument("--models-dir", help="models dir (default: shared.paths.models_dir())")
    c.add_argument("--base-model", default="stable-diffusion-v1-5",
                   help="SD1.5 folder, or a single-file .safetensors/.ckpt fine-tune (free mode), by name under the "
                        "models dir or path")
    c.set_defaults(func=_check)

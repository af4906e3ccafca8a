"""fetch-rig, import-rig: put a converted morphable head rig into the user data dir (see docs/RIGS.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.download import DownloadError
from backend.rigs.bfm import NOTICE, import_bfm
from backend.rigs.ict import ICTSource, RigFetchError, fetch_ict
from shared.paths import rigs_dir
from shared.spec import SpecError


def register(sub: "argparse._SubParsersAction") -> None:
    fetch = sub.add_parser("fetch-rig", help="download and convert a freely licensed rig (ICT-FaceKit, MIT)")
    fetch.add_argument("rig", choices=["ict"], help="which rig")
    fetch.add_argument("--dest", type=Path, default=None, help="rigs folder (default: the user data dir's rigs/)")
    fetch.add_argument("--url", default=None, help="a mirror of the pinned ICT-FaceKit commit zip")
    fetch.add_argument("--force", action="store_true", help="download and convert again")
    fetch.add_argument("--keep-download", action="store_true", help="keep the zip after converting")
    fetch.set_defaults(func=_fetch)

    imp = sub.add_parser("import-rig", help="convert rig files you obtained yourself (BFM 2009: non-commercial)")
    imp.add_argument("rig", choices=["bfm"], help="which rig")
    imp.add_argument("--model", type=Path, help="01_MorphableModel.mat (BFM 2009)")
    imp.add_argument("--expressions", type=Path, help="Exp_Pca.bin (Guo et al.)")
    imp.add_argument("--bfm-dir", type=Path, help="folder with std_exp.txt, BFM_exp_idx.mat, BFM_front_idx.mat, "
                     "facemodel_info.mat (Deep3DFaceRecon's BFM/; default: the folder of --model)")
    imp.add_argument("--std-exp", type=Path, help="std_exp.txt")
    imp.add_argument("--exp-idx", type=Path, help="BFM_exp_idx.mat")
    imp.add_argument("--front-idx", type=Path, help="BFM_front_idx.mat")
    imp.add_argument("--info", type=Path, help="facemodel_info.mat")
    imp.add_argument("--front-model", type=Path, help="or: Deep3DFaceRecon's BFM_model_front.mat")
    imp.add_argument("--output", type=Path, help="where to write the rig (default: <rigs dir>/bfm.npz)")
    imp.set_defaults(func=_import)


def _progress(stage: str, fraction: float) -> None:
    print(f"\r{stage}: {fraction * 100:5.1f} %", end="", file=sys.stderr, flush=True)


def _fetch(args: argparse.Namespace) -> int:
    source = ICTSource(url=args.url) if args.url else ICTSource()
    try:
        path = fetch_ict(args.dest, source, force=args.force, keep_download=args.keep_download, progress=_progress)
    except (DownloadError, RigFetchError, SpecError, OSError) as e:
        print(f"\nfetch-rig ict failed: {e}", file=sys.stderr)
        return 1
    print(f"\nICT-FaceKit rig (MIT License, (c) 2020 USC Institute for Creative Technologies) is at {path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    print(f"Note: {NOTICE}", file=sys.stderr)
    try:
        model = import_bfm(args.model, args.expressions, args.bfm_dir, args.std_exp, args.exp_idx, args.front_idx,
                           args.info, args.front_model)
    except (SpecError, OSError, ValueError) as e:
        print(f"import-rig bfm failed: {e}", file=sys.stderr)
        return 1
    path = model.save(args.output or rigs_dir() / "bfm.npz")
    print(f"BFM rig ({model.n_vertices} vertices, {model.n_identity} identity and {len(model.expression_names)} "
          f"expression coefficients) written to {path} — for your own non-commercial use only")
    return 0

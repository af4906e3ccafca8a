"""`joker-head demo` (what `make demo` runs): the generate pipeline on the bundled ICT head.

With the prior's weights in the models dir it runs the real job (Joker prior, the chosen preset). Without them it
says exactly which files are missing and how to fetch them, then runs the same pipeline with the oracle prior and
the `draft` preset on the CPU, writing renders, the previews of every target update and (export permitting) a GLB.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from backend.jobs.generate import GenerateRunner
from backend.prior import layout
from backend.runner import JobContext
from shared.config import DistillConfig, ExportConfig, PriorConfig
from shared.errors import JokerError
from shared.jobs import GenerateParams, RigState
from shared.morphable import RigNotFound, load_default_rig
from shared.paths import models_dir
from shared.png import encode_png

DEMO_PROMPT = "a man with a big smile"
DEMO_EXPRESSIONS = {"mouthSmile_L": 0.7, "mouthSmile_R": 0.7, "jawOpen": 0.15}


def missing_lpips(models_dir: Path) -> list[str]:
    """A note when the LPIPS(VGG) weights of the paper/fast presets are absent (not blocking: L1 alone then)."""
    from backend.distill.lpips import WEIGHTS_NAME, find_lpips_weights

    if find_lpips_weights(models_dir) is not None:
        return []
    return [f"The LPIPS(VGG) weights are missing: {models_dir / WEIGHTS_NAME} (the paper and fast presets use them; "
            "without them distillation uses L1 alone). docs/DISTILLATION.md, 'LPIPS weights', shows how to write "
            "that file from torchvision's VGG16 and the lpips package's heads."]


def missing_weights(models_dir: Path) -> list[str]:
    """Lines saying what the real demo lacks (empty when the Joker prior can run)."""
    missing = layout.missing_files("joker", models_dir)
    if not missing:
        return []
    lines = [f"The Joker prior's weights are missing from {models_dir} ({len(missing)} file(s)):"]
    lines += [f"  missing {p}" for p in missing]
    lines.append(f"Fetch them on a machine with internet: `{layout.fetch_command('joker', models_dir)}` "
                 "(SD1.5 configs and sd-vae-ft-mse from the Hugging Face hub, the authors' checkpoint from "
                 f"{layout.JOKER_SHARE_URL}); docs/MODELS.md lists the layout.")
    return lines


def _run(args: argparse.Namespace) -> int:
    import torch

    root = Path(args.models_dir).expanduser() if args.models_dir else models_dir()
    lacking = missing_weights(root) if args.mode != "oracle" else []
    mode = args.mode if args.mode != "auto" else ("oracle" if lacking else "joker")
    if lacking:
        print("\n".join(lacking + missing_lpips(root)))
        if args.mode == "joker":
            return 1
        print("Running the same pipeline offline instead: oracle prior (a known textured ICT head), preset draft.\n")
    preset = args.preset or ("draft" if mode == "oracle" else "fast")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads or device == "cpu":
        torch.set_num_threads(args.threads or 1)
    try:
        rig = load_default_rig("ict")
    except RigNotFound as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    state = RigState(model="ict", expressions=DEMO_EXPRESSIONS)
    vertices = rig.evaluate(expressions=DEMO_EXPRESSIONS)
    export = ExportConfig(faces=20_000, texture=512, resolution=160) if preset == "draft" else ExportConfig()
    params = GenerateParams(prompt=DEMO_PROMPT, rig=state, prior=PriorConfig(mode=mode),
                            distill=DistillConfig(preset=preset), export=export)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    estimate = params.distill.estimated_seconds(device)
    print(f"demo: prior {mode}, preset {preset}, device {device}, about {estimate / 60:.0f} min of distillation; "
          f"output in {out}/ (interrupt and run again to resume)")
    ctx = JobContext("demo", out / "job", device=device, resume=True, emit=_printer(out))
    inputs = {"vertices": vertices, "faces": rig.normal_region_faces}
    t0 = time.monotonic()
    try:
        result = GenerateRunner(models_dir=root).run(params, inputs, ctx)
    except JokerError as e:  # any family error: the prior's, the export's or the job's
        print(f"\nerror: {e}" + (f" — {e.hint}" if e.hint else ""), file=sys.stderr)
        return 1
    for a in result.artifacts:
        (out / a.name).write_bytes(a.data)
    (out / "meta.json").write_text(json.dumps(result.meta, indent=2, default=str))
    names = ", ".join(a.name for a in result.artifacts)
    print(f"\ndemo: done in {time.monotonic() - t0:.0f} s — wrote {names}, meta.json and previews/ to {out}/")
    return 0


def _printer(out: Path):
    """Progress events -> one console line each (targets updates and stage changes on their own line)."""
    previews = out / "previews"
    previews.mkdir(parents=True, exist_ok=True)
    seen = {"n": 0}

    def emit(e) -> None:
        eta = f", ETA {e.eta_s:.0f} s" if e.eta_s is not None else ""
        loss = f", loss {e.metrics['loss']:.4f}" if "loss" in e.metrics else ""
        where = "" if e.stage == "distill" else f" ({e.step}/{e.total})"
        line = f"[{e.stage}] {e.message or ''}{where}{loss}{eta}"
        if e.preview is not None:
            seen["n"] += 1
            (previews / f"update_{seen['n']:03d}_step_{e.step:05d}.png").write_bytes(encode_png(e.preview))
            print("\r" + line + " [preview saved]", flush=True)
        else:
            print("\r" + line[:150].ljust(150), end="\n" if e.stage != "distill" else "", flush=True)

    return emit


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("demo", help="run the generate pipeline on the bundled ICT head (offline: oracle + draft)")
    p.add_argument("--mode", choices=("auto", "joker", "oracle"), default="auto",
                   help="auto: the Joker prior when its weights are present, else the oracle prior")
    p.add_argument("--preset", choices=("paper", "fast", "draft"), default=None,
                   help="distillation preset (default: draft for the oracle, fast for the Joker prior)")
    p.add_argument("--out", default="demo-out", help="output folder (default: ./demo-out)")
    p.add_argument("--models-dir", default=None, help="models folder (default: the user data folder)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (default on the CPU: 1 — the field's many small kernels gain little "
                        "from a second thread and lose a lot when the machine is busy)")
    p.set_defaults(func=_run)

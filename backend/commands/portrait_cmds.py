"""generate, preview: from a portrait photo to a head (or one 2D view) without Blender.

    joker-head generate --reference PHOTO [--driving PHOTO] [--expression PRESET] --prompt TEXT [--preset NAME]
                        --out DIR

1. a ``fit`` job on the reference photo: the face's landmarks and the rig's identity (and, with --driving, a second
   ``fit`` job on the driving photo for its expression and head pose: the paper's cross-reenactment)
2. pose the backend's default rig locally (shared.morphable): the reference's identity; the expression of
   --expression, else of the driving photo, else of the reference; the driving photo's head pose, else frontal
3. submit ``preview`` / ``generate`` with that mesh and the reference portrait (framed on the face's landmarks by the
   backend, as the prior was trained), print progress and warnings, save everything into --out and print where the
   GLB (or the image) landed.
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from backend.commands.server_cmds import _client, _client_args, _report_error
from shared import protocol as P
from shared.config import DistillConfig, ExportConfig, PriorConfig
from shared.jobs import FRAMINGS, FitParams, GenerateParams, PreviewParams, RigState
from shared.morphable import RigNotFound, load_default_rig
from shared.presets import get_preset, preset_weights
from shared.spec import SpecError, check, from_dict


def register(sub: "argparse._SubParsersAction") -> None:
    for kind, what in (("generate", "a textured 3D head (GLB)"), ("preview", "one 2D image")):
        p = sub.add_parser(kind, help=f"{what} from a portrait photo (fit, pose the rig, submit)", description=(
            f"Make {what} from a portrait: a fit job finds the face and fits the rig's identity, the default rig is "
            "posed (expression from --expression, else --driving, else the reference), then the job is submitted "
            "with the reference framed as the prior was trained. Needs a running `joker-head serve`."))
        _client_args(p)
        p.add_argument("--reference", type=Path, required=True, help="the identity's portrait (PNG, JPEG, ...)")
        p.add_argument("--driving", type=Path, default=None,
                       help="a second photo whose expression and head pose the head takes (cross-reenactment)")
        p.add_argument("--expression", default=None, metavar="PRESET",
                       help="an expression preset (shared.presets: smile, surprise, ...); overrides --driving's")
        p.add_argument("--prompt", required=True, help="what the rig cannot say: emotion, tongue, hair, ...")
        p.add_argument("--negative", default="", help="negative prompt")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--prior", choices=("joker", "free", "oracle"), default="joker",
                       help="the 2D prior (oracle: the test prior without weights, generate only)")
        p.add_argument("--rig", default="ict", help="the rig to fit and pose (default ict)")
        p.add_argument("--reference-framing", choices=FRAMINGS, default="aligned",
                       help="aligned on the face (default, as the prior was trained) or a centre square crop")
        if kind == "generate":
            p.add_argument("--preset", choices=("paper", "fast", "draft"), default="fast",
                           help="distillation preset (default fast)")
            p.add_argument("--max-steps", type=int, default=0, help="cap the distillation's steps (0: the preset's)")
            p.add_argument("--mesh-resolution", type=int, default=256, help="density grid the mesh is cut from")
            p.add_argument("--faces", type=int, default=50_000, help="triangle count of the exported head")
            p.add_argument("--texture", type=int, default=1024, help="texture width and height in pixels")
        else:
            p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
            p.add_argument("--az", type=float, default=0.0, help="view azimuth in degrees")
            p.add_argument("--el", type=float, default=0.0, help="view elevation in degrees")
        p.add_argument("--out", type=Path, required=True, help="folder for the fits and the result")
        p.add_argument("--wait-s", type=float, default=None, help="give up waiting after this many seconds")
        p.set_defaults(func=cmd_portrait, kind=kind)


def cmd_portrait(args: argparse.Namespace) -> int:
    from shared.client import ClientError

    try:
        reference = read_photo(args.reference, "--reference")
        driving = read_photo(args.driving, "--driving") if args.driving else None
        model = load_default_rig(args.rig)  # before any job: the mesh is posed here
    except (ValueError, RigNotFound) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    with _client(args) as client:
        try:
            ref_fit = run_fit(client, reference, args, "reference")
            drive_fit = None
            if driving is not None:  # its expression and pose, fitted on the reference's identity
                init = from_dict(RigState, ref_fit["rig"])
                drive_fit = run_fit(client, driving, args, "driving", FitParams(rig=args.rig, fit_identity=False, init=init))
            state = compose_state(ref_fit, drive_fit, args.expression, model.expression_names)
            params, inputs = build_job(args, model, state, reference)
            print(f"{args.kind}: identity of {args.reference.name}, expression from "
                  f"{args.expression or (args.driving.name if args.driving else args.reference.name)}", flush=True)
            _, paths = submit_and_wait(client, args.kind, params, inputs, args.out / args.kind, args.wait_s)
        except (SpecError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except ClientError as e:
            return _report_error(e)
    main = _main_file(paths)
    print(f"{'GLB' if main.suffix == '.glb' else 'image'}: {main}")
    return 0


def read_photo(path: Path, option: str) -> bytes:
    """The photo file's bytes; a missing or unreadable file fails naming the option."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{option}: expected a readable photo file, could not read {path} ({e.strerror}); check "
                         "the path") from None


def run_fit(client: Any, photo: bytes, args: argparse.Namespace, role: str,
            params: Optional[FitParams] = None) -> dict:
    """Submit a ``fit`` job for the photo, print its progress, save its files under OUT/fit-ROLE; its meta."""
    params = params or FitParams(rig=args.rig)
    print(f"fit {role}: submitting", flush=True)
    folder = args.out / f"fit-{role}"
    meta, _ = submit_and_wait(client, "fit", params, {"photo": P.Blob(photo, "application/octet-stream")}, folder,
                              args.wait_s)
    print(f"fit {role}: {meta['verdict']}, mean landmark error {meta['residual_mean_px']:.1f} px; crop and overlay "
          f"in {folder}", flush=True)
    if meta["verdict"] == "failed":
        raise ValueError(f"--{role}: the rig could not be fitted to the face in the photo (mean landmark error "
                         f"{meta['residual_mean_px']:.1f} px; see {folder / 'overlay.png'}); use a sharper, more "
                         "frontal photo of the face")
    return meta


def compose_state(reference: dict, driving: Optional[dict], expression: Optional[str],
                  expression_names: Sequence[str]) -> RigState:
    """The rig state to generate: the reference's identity; the expression of the preset, else the driving photo,
    else the reference; the driving photo's head pose, else frontal (the reference's pose is how it was
    photographed, not part of the head)."""

    ref = from_dict(RigState, reference["rig"])
    drive = from_dict(RigState, driving["rig"]) if driving is not None else None
    expressions, gaze = dict(ref.expressions), ref.gaze
    if drive is not None:
        expressions, gaze = dict(drive.expressions), drive.gaze
    if expression:
        expressions = preset_weights(expression, expression_names)  # SpecError lists the known names
        gaze = get_preset(expression).gaze
    pose = drive.pose if drive is not None else (0.0, 0.0, 0.0)
    return replace(ref, expressions=expressions, pose=pose, gaze=gaze)


def build_job(args: argparse.Namespace, model: Any, state: RigState, reference: bytes) -> tuple[Any, dict]:
    """(params, inputs) of the preview / generate job: ``model`` (shared.morphable.MorphableModel) posed by
    ``state`` (vertices float32 [V, 3] head frame, metres; faces int32 [F, 3] its normal-map region) and the
    reference as PNG."""
    vertices = model.evaluate(state.identity or None, state.expressions or None, state.pose, state.gaze)
    inputs = {"vertices": np.ascontiguousarray(vertices, dtype=np.float32),
              "faces": np.ascontiguousarray(model.normal_region_faces, dtype=np.int32),
              "reference": P.Png(as_png(reference))}
    text = dict(prompt=args.prompt, negative_prompt=args.negative, seed=args.seed,
                reference_framing=args.reference_framing, rig=state, prior=PriorConfig(mode=args.prior))
    if args.kind == "generate":
        distill = DistillConfig(preset=args.preset)
        if 0 < args.max_steps < distill.resolved().steps:
            distill = distill.with_steps(args.max_steps)
        params: GenerateParams | PreviewParams = GenerateParams(**text, distill=distill, export=ExportConfig(
            faces=args.faces, texture=args.texture, resolution=args.mesh_resolution))
    else:
        params = PreviewParams(**text, steps=args.steps, az_deg=args.az, el_deg=args.el)
    return check(params), inputs


def as_png(photo: bytes) -> bytes:
    """The reference as the protocol's PNG frame: PNG files as they are, anything else decoded (EXIF orientation
    applied) and re-encoded losslessly as 8-bit RGB."""
    if photo[:8] == b"\x89PNG\r\n\x1a\n":
        return photo
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = ImageOps.exif_transpose(Image.open(io.BytesIO(photo))).convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"--reference: expected an image file, could not decode it ({e})") from None
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def submit_and_wait(client: Any, kind: str, params: Any, inputs: dict, folder: Path,
                    timeout_s: Optional[float]) -> tuple[dict, list[Path]]:
    """Submit, print progress (warnings on stderr), save the result into ``folder``; (its meta, the paths
    written). A failed job raises ``shared.client.ClientError``."""
    from shared.client import save_result

    job = client.submit(kind, params, inputs)
    client.confirm(job)
    result = client.wait(job, timeout_s=timeout_s, on_event=_print_progress)
    return result.body.meta, save_result(result, folder)


def _print_progress(msg: P.Message) -> None:
    body = msg.body
    if isinstance(body, P.Progress):
        if body.stage == "warning":
            print(f"warning: {body.message}", file=sys.stderr, flush=True)
            return
        eta = f" eta {body.eta_s:.0f}s" if body.eta_s is not None else ""
        print(f"  [{body.stage}] {body.step}/{body.total} {body.message}{eta}", flush=True)


def _main_file(paths: list[Path]) -> Path:
    ranked = sorted(paths, key=lambda p: (p.suffix != ".glb", p.name != "image.png", p.suffix != ".png"))
    return ranked[0]

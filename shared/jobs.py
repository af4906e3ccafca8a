"""Job kinds: the parameters and input frames each kind of job takes. The client and the server validate against these.

A job request is ``params`` (JSON, one spec dataclass per kind) plus named input frames (arrays or PNG images).
Geometry travels as arrays so the backend renders normal maps from exactly the mesh the artist posed:
``vertices`` float32 [V, 3] in the head frame (metres, see ``shared.conventions``) and ``faces`` int32 [F, 3] of the
normal-map region (what the prior's ControlNet should see).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .config import DistillConfig, ExportConfig, PriorConfig
from .protocol import Blob, Png
from .spec import SpecError, spec

MAX_PROMPT = 1000  # characters; CLIP reads 77 tokens, the rest is kept for the record
MAX_VERTICES = 200_000
MAX_FACES = 400_000
FRAMINGS = ("aligned", "centre")
FRAMING_DOC = ("how the reference portrait is framed for the prior: aligned on the face's 5 landmarks exactly as "
               "the prior was trained (default), or a centre square crop for images without a detectable face")


@dataclass
class RigState:
    """The posed morphable head, for the record and for rigs the backend knows by name."""

    model: str = spec("ict", max_len=64, pattern=r"[a-z0-9_\-]+", doc="rig name: ict, bfm, ...")
    identity: tuple[float, ...] = spec((), max_len=512, lo=-10.0, hi=10.0, doc="identity weights (std units)")
    expressions: dict[str, float] = spec({}, max_len=256, lo=-2.0, hi=2.0, doc="expression weights by name")
    pose: tuple[float, float, float] = spec((0.0, 0.0, 0.0), lo=-3.1416, hi=3.1416,
                                            doc="head rotation (pitch, yaw, roll) in radians")
    gaze: tuple[float, float] = spec((0.0, 0.0), lo=-1.0, hi=1.0, doc="eyeball rotation (yaw, pitch) in radians")


@dataclass
class TextParams:
    prompt: str = spec("", max_len=MAX_PROMPT, doc="what the 3DMM cannot say: emotion, tongue, hair, ...")
    negative_prompt: str = spec("", max_len=MAX_PROMPT, doc="the unconditional branch's text")
    seed: int = spec(0, lo=0, hi=2**32 - 1, doc="random seed; the same seed reproduces the result")


@dataclass
class PreviewParams(TextParams):
    """One 2D image of the posed rig from one view."""

    cfg: float = spec(3.0, lo=0.0, hi=50.0, doc="classifier-free guidance scale (3 in the reference)")
    steps: int = spec(100, lo=1, hi=1000, doc="denoising steps (100 PNDM in the reference; 25 is a good preview)")
    sampler: str = spec("pndm", choices=("pndm", "ddim"), doc="PNDM as the reference, or DDIM")
    az_deg: float = spec(0.0, lo=-90.0, hi=90.0, doc="view azimuth in degrees (positive: camera on subject's right)")
    el_deg: float = spec(0.0, lo=-60.0, hi=60.0, doc="view elevation in degrees (positive: camera above)")
    reference_framing: str = spec("aligned", choices=FRAMINGS, doc=FRAMING_DOC)
    rig: RigState = field(default_factory=RigState)
    prior: PriorConfig = field(default_factory=PriorConfig)


@dataclass
class GenerateParams(TextParams):
    """The full job: normal maps for every view -> prior -> distillation -> mesh export."""

    cfg: float = spec(19.0, lo=0.0, hi=50.0, doc="guidance scale in distillation (19 in the reference)")
    reference_framing: str = spec("aligned", choices=FRAMINGS, doc=FRAMING_DOC)
    rig: RigState = field(default_factory=RigState)
    prior: PriorConfig = field(default_factory=PriorConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


@dataclass
class FitParams:
    """Fit a portrait: find the face, frame it as the prior was trained, fit the named rig to its landmarks."""

    rig: str = spec("ict", max_len=64, pattern=r"[a-z0-9_\-]+", doc="the backend's rig to fit: ict, bfm, ...")
    fit_identity: bool = spec(True, doc="fit the identity modes (off: keep init's)")
    fit_expression: bool = spec(True, doc="fit the named expression weights (off: keep init's)")
    fit_pose: bool = spec(True, doc="fit the head rotation (off: keep init's)")
    init: RigState = field(default_factory=RigState)  # parts not fitted keep these values (Match Expression: the
    # artist's identity, so the driving photo's expression is fitted on the artist's face)


@dataclass(frozen=True)
class InputSpec:
    """One input frame a job kind accepts. ``shape`` uses -1 for a free dimension; ``kind`` is array, png or bytes."""

    name: str
    kind: str
    dtype: Optional[str] = None
    shape: tuple[int, ...] = ()
    required: bool = True
    max_dim: int = 0  # upper bound for each free dimension (0: none beyond the frame-size limit)
    doc: str = ""


MESH_INPUTS = (
    InputSpec("vertices", "array", "float32", (-1, 3), True, MAX_VERTICES, "posed vertices, head frame, metres"),
    InputSpec("faces", "array", "int32", (-1, 3), True, MAX_FACES, "triangles of the normal-map region"),
)
REFERENCE_INPUT = InputSpec("reference", "png", required=False, doc="the identity's portrait (RGB, any size)")
PHOTO_INPUT = InputSpec("photo", "bytes", doc="a photo file as stored (PNG, JPEG, TIFF, WebP; 8 or 16 bit; EXIF "
                        "orientation honoured), at most shared.protocol.MAX_IMAGE_SIDE px a side")


@dataclass(frozen=True)
class JobKind:
    name: str
    params: type
    inputs: tuple[InputSpec, ...]
    doc: str


@dataclass
class SelftestParams:
    """A diagnostic job that exercises the whole job machinery without a GPU: progress, cancel, results, failures."""

    steps: int = spec(5, lo=1, hi=100_000, doc="progress steps to report")
    step_s: float = spec(0.0, lo=0.0, hi=60.0, doc="seconds per step")
    result_bytes: int = spec(0, lo=0, hi=512 * 1024 * 1024, doc="size of the artifact returned")
    fail_at: int = spec(-1, lo=-1, hi=100_000, doc="step at which to fail (-1: never)")
    failure: str = spec("exception", choices=("exception", "out_of_memory"), doc="how fail_at fails")


JOB_KINDS: dict[str, JobKind] = {
    "selftest": JobKind("selftest", SelftestParams, (InputSpec("data", "array", required=False, max_dim=1 << 26,
                                                               shape=(-1,), doc="any 1-D array, echoed as sha256"),),
                        "checks a deployment end to end (no GPU, no weights)"),
    "preview": JobKind("preview", PreviewParams, MESH_INPUTS + (REFERENCE_INPUT,), "one 2D image of the posed rig"),
    "generate": JobKind("generate", GenerateParams, MESH_INPUTS + (REFERENCE_INPUT,), "a textured 3D head (GLB)"),
    "fit": JobKind("fit", FitParams, (PHOTO_INPUT,), "a portrait's aligned crop, landmarks and the rig fitted to it"),
}


def validate_inputs(kind: JobKind, payloads: dict) -> None:
    """Check input frames against the kind's :class:`InputSpec` list. Raises ``shared.spec.SpecError``."""
    known = {s.name: s for s in kind.inputs}
    for name in payloads:
        if name not in known:
            raise SpecError(f"inputs.{name}", f"one of {', '.join(known) or 'no inputs'}", name,
                            f"the {kind.name} job takes no input called {name}", code="unknown_field")
    for s in kind.inputs:
        value = payloads.get(s.name)
        field_name = f"inputs.{s.name}"
        if value is None:
            if s.required:
                raise SpecError(field_name, f"{s.kind} ({s.doc})", "nothing", f"send the {s.name} frame",
                                code="missing_field")
            continue
        want = {"array": np.ndarray, "png": Png, "bytes": Blob}[s.kind]
        if not isinstance(value, want):
            raise SpecError(field_name, f"{'an' if s.kind[0] in 'aeiou' else 'a'} {s.kind} frame", type(value).__name__, f"send {s.name} as {s.kind}")
        if s.kind != "array":
            continue
        assert isinstance(value, np.ndarray)  # checked against `want` above; tells the type checker
        if s.dtype and value.dtype.name != s.dtype:
            raise SpecError(field_name, f"dtype {s.dtype}", value.dtype.name, f"convert {s.name} to {s.dtype}",
                            code="bad_dtype")
        shape_ok = len(value.shape) == len(s.shape) and all(
            (w == -1 and (not s.max_dim or 0 < g <= s.max_dim)) or w == g for w, g in zip(s.shape, value.shape))
        if not shape_ok:
            want_shape = "[" + ", ".join("N" if w == -1 else str(w) for w in s.shape) + "]"
            limit = f" with N in 1..{s.max_dim}" if s.max_dim else ""
            raise SpecError(field_name, f"shape {want_shape}{limit}", list(value.shape),
                            f"send {s.name} as {want_shape}", code="bad_shape")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise SpecError(field_name, "finite values", "NaN or infinity", f"clean {s.name} before sending")
    faces, vertices = payloads.get("faces"), payloads.get("vertices")
    if isinstance(faces, np.ndarray) and isinstance(vertices, np.ndarray) and faces.size:
        lo, hi = int(faces.min()), int(faces.max())
        if lo < 0 or hi >= len(vertices):
            raise SpecError("inputs.faces", f"vertex indices in 0..{len(vertices) - 1}", f"indices {lo}..{hi}",
                            "faces must index the vertices sent with them", code="bad_index")

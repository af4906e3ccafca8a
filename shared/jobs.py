"""Job kinds: the parameters and input frames each kind of job takes. The client and the server validate against these.

A job request is ``params`` (JSON, one spec dataclass per kind) plus named input frames (arrays or PNG images).
Geometry travels as arrays so the backend renders normal maps from exactly the mesh the artist posed:
``vertices`` float32 [V, 3] in the head frame (metres, see ``shared.conventions``) and ``faces`` int32 [F, 3] of the
normal-map region (what the prior's ControlNet should see).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from shared.config import DistillConfig, ExportConfig, PriorConfig
from shared.spec import spec

MAX_PROMPT = 1000  # characters; CLIP reads 77 tokens, the rest is kept for the record
MAX_VERTICES = 200_000
MAX_FACES = 400_000


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
    rig: RigState = field(default_factory=RigState)
    prior: PriorConfig = field(default_factory=PriorConfig)


@dataclass
class GenerateParams(TextParams):
    """The full job: normal maps for every view -> prior -> distillation -> mesh export."""

    cfg: float = spec(19.0, lo=0.0, hi=50.0, doc="guidance scale in distillation (19 in the reference)")
    rig: RigState = field(default_factory=RigState)
    prior: PriorConfig = field(default_factory=PriorConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


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


@dataclass(frozen=True)
class JobKind:
    name: str
    params: type
    inputs: tuple[InputSpec, ...]
    doc: str


JOB_KINDS: dict[str, JobKind] = {
    "preview": JobKind("preview", PreviewParams, MESH_INPUTS + (REFERENCE_INPUT,), "one 2D image of the posed rig"),
    "generate": JobKind("generate", GenerateParams, MESH_INPUTS + (REFERENCE_INPUT,), "a textured 3D head (GLB)"),
}

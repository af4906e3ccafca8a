"""The wire protocol between the add-on / CLI and the backend. Specified for other languages in docs/PROTOCOL.md.

A message is one ZeroMQ multipart message:
    frame 0       header: a UTF-8 JSON object {"v": version, "type": ..., "req"?: ..., "frames"?: [...], ...fields}
    frames 1..n   payloads, one per entry of header["frames"], in order:
                  {"name", "kind": "array", "dtype", "shape"}  raw little-endian C-order array bytes
                  {"name", "kind": "png"}                      a PNG file
                  {"name", "kind": "bytes", "media_type"}      opaque bytes (e.g. a GLB)
Every header field is declared below as a spec dataclass and validated with limits; anything wrong raises
:class:`ProtocolError`, which the server turns into an ``error`` reply. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional, Union

import numpy as np

from . import png as pngcodec
from .errors import JokerError
from .spec import SpecError, from_dict, spec, to_dict

PROTOCOL_VERSION = 1
JOB_ID = r"[0-9a-f]{32}"  # uuid4().hex: safe as a folder name, never a path
NAME = r"(?!\.{1,2}$)[A-Za-z0-9_.\-]{1,64}"  # a file name: no "/", never "." or ".."

MAX_HEADER = 64 * 1024  # bytes of JSON
MAX_HEADER_DEPTH = 32  # nesting of arrays/objects in a header (a submit needs 4)
MAX_HEADER_VALUES = 4096  # JSON values in a header, keys included (a full generate submit has ~1,200)
MAX_FRAMES = 16
MAX_REQUEST_FRAME = 64 * 1024 * 1024  # one payload frame sent to the server
MAX_RESULT_FRAME = 512 * 1024 * 1024  # one payload frame sent by the server
MAX_REQUEST = 256 * 1024 * 1024  # all payload frames of one request together
MAX_INT = 2**63 - 1  # JSON integers must fit in 64 bits (other languages parse them into int64)
MAX_IMAGE_SIDE = 4096
MAX_ARRAY_DIMS = 4
DTYPES = ("uint8", "uint16", "int32", "int64", "float16", "float32", "float64")
STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINAL_STATES = ("done", "failed", "cancelled", "interrupted")


class ProtocolError(SpecError):
    """A message that does not follow the protocol. ``code`` says which rule broke."""


@dataclass(frozen=True)
class Png:
    """A PNG payload (bytes as sent)."""

    data: bytes


@dataclass(frozen=True)
class Blob:
    """An opaque payload with a media type, e.g. model/gltf-binary."""

    data: bytes
    media_type: str = "application/octet-stream"


Payload = Union[np.ndarray, Png, Blob]


@dataclass
class FrameDesc:
    name: str = spec(pattern=NAME, doc="payload name, unique in the message")
    kind: str = spec(choices=("array", "png", "bytes"))
    dtype: Optional[str] = spec(None, choices=DTYPES + (None,))
    shape: Optional[tuple[int, ...]] = spec(None, lo=0, hi=2**31 - 1, max_len=MAX_ARRAY_DIMS)
    media_type: Optional[str] = spec(None, max_len=128, pattern=r"[a-z]+/[A-Za-z0-9.+\-]+")


# --- message types ---------------------------------------------------------------------------------------------------
# Each is a spec dataclass; TYPE is the header's "type". Requests flow client -> server, the rest server -> client.

@dataclass
class Hello:
    TYPE: ClassVar[str] = "hello"
    client: str = spec("", max_len=128, doc="client name and version, for the server's log")


@dataclass
class Welcome:
    TYPE: ClassVar[str] = "welcome"
    server: str = spec("", max_len=128)
    kinds: tuple[str, ...] = spec((), max_len=64, doc="job kinds this server runs")
    devices: tuple[str, ...] = spec((), max_len=64, doc="compute devices, one worker each")
    max_frame: int = spec(MAX_REQUEST_FRAME, lo=0, doc="largest payload frame the server accepts")
    heartbeat_s: float = spec(2.0, lo=0.0, hi=3600.0)
    max_request: int = spec(MAX_REQUEST, lo=0, doc="largest request the server accepts, all payload frames together")


@dataclass
class Heartbeat:
    TYPE: ClassVar[str] = "heartbeat"


@dataclass
class Submit:
    TYPE: ClassVar[str] = "submit"
    job: str = spec(pattern=JOB_ID, doc="client-chosen id (uuid4 hex); resubmitting the same id is idempotent")
    kind: str = spec(pattern=NAME)
    params: Any = spec(None, doc="the kind's parameters (shared.jobs), validated by the server")


@dataclass
class Accepted:
    TYPE: ClassVar[str] = "accepted"
    job: str = spec(pattern=JOB_ID)
    state: str = spec("queued", choices=STATES)
    position: int = spec(0, lo=0, doc="jobs ahead in the queue")
    duplicate: bool = spec(False, doc="this id was already known: nothing new was queued")


@dataclass
class Progress:
    TYPE: ClassVar[str] = "progress"
    job: str = spec(pattern=JOB_ID)
    seq: int = spec(0, lo=0, doc="per-job sequence number, for reattaching with fetch(since=seq)")
    stage: str = spec("", max_len=64)
    step: int = spec(0, lo=0)
    total: int = spec(0, lo=0)
    message: str = spec("", max_len=1000)
    metrics: dict[str, float] = spec({}, max_len=32)
    eta_s: Optional[float] = spec(None, lo=0.0)


@dataclass
class Cancel:
    TYPE: ClassVar[str] = "cancel"
    job: str = spec(pattern=JOB_ID)


@dataclass
class Status:
    TYPE: ClassVar[str] = "status"
    job: str = spec(pattern=JOB_ID)


@dataclass
class JobState:
    TYPE: ClassVar[str] = "job_state"
    job: str = spec(pattern=JOB_ID)
    kind: str = spec("", max_len=64)
    state: str = spec("queued", choices=STATES)
    created: float = spec(0.0, lo=0.0, doc="unix time")
    updated: float = spec(0.0, lo=0.0)
    position: int = spec(0, lo=0)
    last_seq: int = spec(0, lo=0)
    error: Optional[str] = spec(None, max_len=2000)


@dataclass
class List:
    TYPE: ClassVar[str] = "list"
    limit: int = spec(100, lo=1, hi=1000)


@dataclass
class JobList:
    TYPE: ClassVar[str] = "job_list"
    jobs: tuple[JobState, ...] = spec((), max_len=1000)


@dataclass
class Fetch:
    TYPE: ClassVar[str] = "fetch"
    job: str = spec(pattern=JOB_ID)
    since: int = spec(0, lo=0, doc="replay progress with seq > since; the result follows if the job is done")


@dataclass
class Result:
    TYPE: ClassVar[str] = "result"
    job: str = spec(pattern=JOB_ID)
    meta: Any = spec(None, doc="kind-specific JSON: faces, texture size, units, frame, timings, ...")


@dataclass
class Error:
    TYPE: ClassVar[str] = "error"
    code: str = spec("error", max_len=64)
    message: str = spec("", max_len=4000)
    field: str = spec("", max_len=256)
    expected: str = spec("", max_len=1000)
    received: str = spec("", max_len=1000)
    hint: str = spec("", max_len=1000)
    job: Optional[str] = spec(None, pattern=JOB_ID)
    retry_after_s: float = spec(0.0, lo=0.0, hi=3600.0, doc="for `rate_limited`: resend after this many seconds")

    @classmethod
    def from_exception(cls, exc: JokerError, job: Optional[str] = None) -> "Error":
        """The reply for any family error (a failed validation, a failed job), clipped to this message's own limits
        (hostile input can be long)."""
        d = exc.to_dict()
        return cls(clip(d["code"], 64), clip(d["message"], 4000), clip(d.get("field", ""), 256),
                   clip(d.get("expected", ""), 1000), clip(d.get("received", ""), 1000), clip(d["hint"], 1000), job)


def clip(text: Any, limit: int) -> str:
    """Text that passes a ``max_len`` string field: NUL escaped, cut to ``limit`` characters (with "...")."""
    text = str(text).replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


MESSAGE_TYPES: dict[str, type] = {t.TYPE: t for t in (
    Hello, Welcome, Heartbeat, Submit, Accepted, Progress, Cancel, Status, JobState, List, JobList, Fetch, Result,
    Error)}
REQUESTS = ("hello", "heartbeat", "submit", "cancel", "status", "list", "fetch")


@dataclass
class Message:
    """A decoded message: its body (one of the types above), payloads by name, and the request id it answers."""

    body: Any
    payloads: dict[str, Payload] = field(default_factory=dict)
    req: Optional[str] = None

    @property
    def type(self) -> str:
        return self.body.TYPE


# --- encoding --------------------------------------------------------------------------------------------------------

def encode(body: Any, payloads: Optional[dict[str, Payload]] = None, req: Optional[str] = None) -> list:
    """Message -> list of frames (bytes / buffers) for ``socket.send_multipart(..., copy=False)``."""
    header = {"v": PROTOCOL_VERSION, "type": body.TYPE, **to_dict(body)}
    if req is not None:
        header["req"] = req
    frames: list = []
    descs = []
    for name, value in (payloads or {}).items():
        desc, buf = _encode_payload(name, value)
        descs.append(desc)
        frames.append(buf)
    if descs:
        header["frames"] = descs
    return [json.dumps(header, separators=(",", ":"), allow_nan=False).encode()] + frames


def _encode_payload(name: str, value: Payload) -> tuple[dict, Any]:
    if isinstance(value, np.ndarray):
        if value.dtype.name not in DTYPES:
            raise ProtocolError(f"payload {name}", f"an array of {', '.join(DTYPES)}", value.dtype.name,
                                "convert the array before sending", code="bad_dtype")
        arr = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
        return {"name": name, "kind": "array", "dtype": arr.dtype.name, "shape": list(arr.shape)}, memoryview(arr).cast("B")
    if isinstance(value, Png):
        return {"name": name, "kind": "png"}, value.data
    if isinstance(value, Blob):
        return {"name": name, "kind": "bytes", "media_type": value.media_type}, value.data
    raise TypeError(f"payload {name}: expected ndarray, Png or Blob, got {type(value).__name__}")


# --- decoding --------------------------------------------------------------------------------------------------------

def decode(frames: list, max_frame: int = MAX_REQUEST_FRAME, allowed: Optional[tuple[str, ...]] = None,
           max_total: Optional[int] = None) -> Message:
    """Frames (bytes or zmq.Frame) -> :class:`Message`, validating everything. Raises :class:`ProtocolError`.

    ``max_total`` bounds the payload bytes of the whole message (libzmq only bounds each frame).
    """
    if not frames:
        raise ProtocolError("header", "a JSON header frame", "an empty message", "send at least one frame",
                            code="bad_frame")
    header: Any = None
    try:
        if len(frames) > MAX_FRAMES + 1:
            raise ProtocolError("frames", f"at most {MAX_FRAMES} payload frames", f"{len(frames) - 1} frames",
                                "send fewer payloads per message", code="bad_frames")
        if max_total is not None:
            total = sum(len(_buffer(f)) for f in frames[1:])
            if total > max_total:
                raise ProtocolError("frames", f"at most {max_total} payload bytes per request", f"{total} bytes",
                                    "send smaller inputs (downscale images, decimate meshes)",
                                    code="request_too_large")
        header = parse_header(_buffer(frames[0]))
        return _decode_fields(_check_header(header), frames, max_frame, allowed)
    except SpecError as e:  # name the request (and job) it answers, so even a refusal reaches its caller
        if header is None and e.code in ("bad_frames", "request_too_large"):  # refused before the header was read
            header = _readable_header(frames[0])
        e.req, e.job = _ids(header)
        if header is None and e.code != "header_too_large":  # unparsed: a plain search finds an ordinary id
            e.req = peek_req(frames[0])
        raise


def _ids(header: Any) -> tuple[Optional[str], Optional[str]]:
    """The header's request id and job id where they are well-formed, else None."""
    if not isinstance(header, dict):
        return None, None
    req, job = header.get("req"), header.get("job")
    return (req if isinstance(req, str) and len(req) <= 64 else None,
            job if isinstance(job, str) and re.fullmatch(JOB_ID, job) else None)


def _readable_header(frame: Any) -> Any:
    """The parsed header of a message refused before its header was read (too many or too large frames), or None."""
    try:
        return parse_header(_buffer(frame))
    except ProtocolError:
        return None


def _decode_fields(header: dict, frames: list, max_frame: int, allowed: Optional[tuple[str, ...]]) -> Message:
    mtype = header.pop("type")
    if allowed is not None and mtype not in allowed:
        raise ProtocolError("type", f"one of {', '.join(allowed)}", mtype, "this side does not accept that message",
                            code="unknown_type")
    req = header.pop("req", None)
    if req is not None and (not isinstance(req, str) or len(req) > 64):
        raise ProtocolError("req", "a string of at most 64 characters", req, "use a short request id", code="bad_req")
    descs = header.pop("frames", [])
    if not isinstance(descs, list) or len(descs) > MAX_FRAMES:
        raise ProtocolError("frames", f"a list of at most {MAX_FRAMES} frame descriptions", descs,
                            "describe each payload frame once", code="bad_frames")
    if len(descs) != len(frames) - 1:
        raise ProtocolError("frames", f"{len(descs)} payload frames as described", f"{len(frames) - 1} frames",
                            "send one frame per entry of header.frames", code="frame_count")
    if "" in header:  # an unknown key that the error's ``field`` could not name
        raise ProtocolError("header", "named fields", '""', "remove the field with an empty name", code="unknown_field")
    body = from_dict(MESSAGE_TYPES[mtype], header)
    payloads: dict[str, Payload] = {}
    for i, raw_desc in enumerate(descs):
        desc = from_dict(FrameDesc, raw_desc, prefix=f"frames[{i}].")
        if desc.name in payloads:
            raise ProtocolError(f"frames[{i}].name", "a unique name", desc.name, "rename the payload",
                                code="bad_frames")
        payloads[desc.name] = _decode_payload(desc, _buffer(frames[i + 1]), max_frame)
    return Message(body, payloads, req)


_REQ = re.compile(rb'"req"\s*:\s*"([A-Za-z0-9_.:\-]{1,64})"')


def peek_req(frame: Any) -> Optional[str]:
    """The request id of a header that will not be parsed (a refused message), found by a bounded search; or None.

    Only ids of plain characters are recognised: the reply must never echo anything a parser would have refused.
    """
    buf = _buffer(frame)
    if len(buf) > MAX_HEADER:
        return None
    found = _REQ.search(buf)
    return found.group(1).decode("ascii") if found else None


def _buffer(frame: Any) -> memoryview:
    return memoryview(frame.buffer if hasattr(frame, "buffer") else frame)


_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"', re.DOTALL)  # a JSON string; possessive: no backtracking
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_EMPTY_PAIR = re.compile(rb"\[\]|\{\}")


def check_header_shape(raw: bytes, max_depth: int = MAX_HEADER_DEPTH, max_values: int = MAX_HEADER_VALUES) -> None:
    """Refuse a header whose nesting or number of values is over the limits, before any parser sees it.

    Counting passes in C over the bytes: bounds from above (separators, brackets, even inside strings) let an
    ordinary header through at once; only a header near the limits has its strings blanked (so brackets and commas in
    text do not count) and its nesting measured. A hostile 64 KiB header costs microseconds here instead of
    milliseconds and a RecursionError in ``json.loads``. Raises :class:`ProtocolError` (``header_too_deep``,
    ``header_too_many_values``, ``bad_json``).
    """
    containers = raw.count(b"[") + raw.count(b"{")
    if containers <= max_depth and raw.count(b",") + raw.count(b":") + containers < max_values:
        return  # over-estimates already within the limits
    if (raw.count(b'"') - raw.count(b'\\"')) // 2 > max_values:  # at least this many strings, each a value
        _too_many(max_values, (raw.count(b'"') - raw.count(b'\\"')) // 2)
    text = _STRING.sub(b"0", raw) if b'"' in raw else raw
    if b'"' in text:  # a string that never ends
        raise ProtocolError("header", "a UTF-8 JSON object", raw[:40], "the header has an unterminated string",
                            code="bad_json")
    containers = text.count(b"[") + text.count(b"{")
    values = text.count(b",") + text.count(b":") + containers + 1  # an upper bound: separators + openers + 1
    if values > max_values:
        _too_many(max_values, values)
    if containers <= max_depth:
        return
    brackets = text.translate(None, _NOT_BRACKETS)
    for _ in range(max_depth):  # each pass removes the innermost level
        brackets, n = _EMPTY_PAIR.subn(b"", brackets)
        if not brackets or not n:
            break
    if brackets and _EMPTY_PAIR.search(brackets):  # still shrinking after max_depth levels
        raise ProtocolError("header", f"at most {max_depth} levels of nested arrays/objects", "deeper nesting",
                            "flatten the header's values", code="header_too_deep")
    if brackets:
        raise ProtocolError("header", "balanced brackets", brackets[:40], "the header is not valid JSON",
                            code="bad_json")


def _too_many(limit: int, found: int) -> None:
    raise ProtocolError("header", f"at most {limit} JSON values", f"about {found} values",
                        "send bulk data (vertices, weights, images) as payload frames", code="header_too_many_values")


def parse_header(buf: Any) -> Any:
    """Header bytes -> a JSON value (strict), after the size and shape checks. Raises :class:`ProtocolError`."""
    if len(buf) > MAX_HEADER:
        raise ProtocolError("header", f"at most {MAX_HEADER} bytes of JSON", f"{len(buf)} bytes",
                            "send large data as payload frames", code="header_too_large")
    raw = bytes(buf)  # one copy out of the zmq frame; nothing keeps the frame after this
    check_header_shape(raw)
    header, reason = None, ""
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float,
                            parse_int=_int64)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as e:
        reason = str(e) or type(e).__name__  # keep the text only: the exception holds the whole document
    if reason:  # raised outside the handler, so the error carries no __context__ (and no parser frames)
        raise ProtocolError("header", "a UTF-8 JSON object", raw[:40], f"the header is not valid JSON ({reason})",
                            code="bad_json")
    return header


def _check_header(header: Any) -> dict:
    """The parsed header's object, version and type checked."""
    if not isinstance(header, dict):
        raise ProtocolError("header", "a JSON object", header, "wrap the fields in an object", code="bad_json")
    header = dict(header)  # a copy to consume: the original still names req and job for an error reply
    version = header.pop("v", None)
    if version != PROTOCOL_VERSION:
        raise ProtocolError("v", f"protocol version {PROTOCOL_VERSION}", version,
                            "update the add-on or the backend so both speak the same protocol version",
                            code="version_mismatch")
    if not isinstance(header.get("type"), str) or header["type"] not in MESSAGE_TYPES:
        raise ProtocolError("type", f"one of {', '.join(MESSAGE_TYPES)}", header.get("type"),
                            "check the message type", code="unknown_type")
    return header


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _int64(text: str) -> int:
    if len(text) > 20 or not -MAX_INT - 1 <= int(text) <= MAX_INT:
        raise ValueError(f"integer {text[:24]}... does not fit in 64 bits")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows to infinity")
    return value


def _decode_payload(desc: FrameDesc, buf: memoryview, max_frame: int) -> Payload:
    name = f"frames[{desc.name}]"
    if len(buf) > max_frame:
        raise ProtocolError(name, f"at most {max_frame} bytes", f"{len(buf)} bytes",
                            "send a smaller payload (downscale the image or decimate the mesh)", code="frame_too_large")
    if desc.kind == "png":
        try:
            info = pngcodec.png_check(bytes(buf))  # structure and CRCs, nothing inflated
        except pngcodec.PngError as e:
            raise ProtocolError(name, "a PNG image", bytes(buf[:16]), f"send a valid PNG ({e})", code="bad_png") from None
        if max(info.width, info.height) > MAX_IMAGE_SIDE:
            raise ProtocolError(name, f"an image at most {MAX_IMAGE_SIDE} px a side", f"{info.width}x{info.height}",
                                "downscale the image", code="image_too_large")
        return Png(bytes(buf))
    if desc.kind == "bytes":
        return Blob(bytes(buf), desc.media_type or "application/octet-stream")
    if desc.dtype is None or desc.shape is None:
        raise ProtocolError(name, "dtype and shape for an array", "missing", "describe the array", code="bad_array")
    dtype = np.dtype(desc.dtype).newbyteorder("<")
    count = math.prod(desc.shape)  # Python ints: a hostile shape must not overflow into a small count
    if count * dtype.itemsize != len(buf):
        raise ProtocolError(name, f"{count * dtype.itemsize} bytes for {desc.dtype}{list(desc.shape)}",
                            f"{len(buf)} bytes", "send the array's raw C-order bytes", code="bad_array")
    return np.frombuffer(buf, dtype=dtype).reshape(desc.shape)  # read-only view, no copy


def error_frames(exc: SpecError, job: Optional[str] = None, req: Optional[str] = None) -> list:
    """The ``error`` reply for a failed validation."""
    return encode(Error.from_exception(exc, job), req=req)

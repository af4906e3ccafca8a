"""Hostile messages for the reliability runs: hypothesis strategies and the protocol's rules for judging a reply.

A case is the raw frames a misbehaving client sends. The server's answer is judged by :func:`judge` against
docs/PROTOCOL.md: exactly one reply per request, decodable under the protocol's own limits, carrying the request's
``req`` when the header was readable, and either the reply type the request asks for or an ``error`` with a
documented code and its fields filled in. ``internal`` (a server bug) counts as a crash.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from shared import protocol as P
from shared.png import SIGNATURE, encode_png
from shared.spec import SpecError

REPO = Path(__file__).resolve().parents[1]
REPLY_OF = {"hello": "welcome", "heartbeat": "heartbeat", "submit": "accepted", "cancel": "job_state",
            "status": "job_state", "list": "job_list", "fetch": "job_state"}
SERVER_TYPES = ("welcome", "heartbeat", "accepted", "progress", "job_state", "job_list", "result", "error")


def documented_codes() -> set[str]:
    """The error codes listed in docs/PROTOCOL.md's table: the contract the fuzz holds the server to."""
    text = (REPO / "docs" / "PROTOCOL.md").read_text()
    table = text.split("| code | when |", 1)[1].split("\n\n", 1)[0]
    cells = [row.split("|")[1] for row in table.splitlines() if row.count("|") >= 2]
    return {code for cell in cells for code in re.findall(r"`([a-z_]+)`", cell)}


# --- raw material ----------------------------------------------------------------------------------------------------

PATH_IDS = ["../../etc/passwd", "/etc/passwd", "..", ".", "", "a" * 31, "A" * 32, "a" * 33, "0" * 32 + "\n",
            "..\\..\\windows\\system32", "%2e%2e%2f" * 4, "0" * 30 + "/.", "\x00" * 32, "C:\\jobs", "~root",
            "0" * 16 + "\u0660" * 16, "\uff46" * 32, "0" * 31 + "\u0000", "jobs/../../x", "file:///etc/passwd"]
ODD_TEXT = ["\ud800", "\udfff", "\ud83d", "\u202e", "\u200b", "\ufeff", "e\u0301" * 300, "\U0001f600" * 20, "\x00",
            "\x7f", "\u2028\u2029", "\ufffd", "a" * 70_000, "<script>", "' OR 1=1 --", "%s%n%x", "\r\n\t"]
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e308", "5e-324", str(10**30), str(2**63),
               str(-2**63 - 1), "-1", "0", "-0.0", "1.5", "true", "null", '"5"', "[]", "{}", "9" * 5000, "1" * 19]
DTYPES = list(P.DTYPES) + ["complex64", "object", "<f4", "|O", "V8", "float128", "bool", "", "U10", "datetime64"]
SIZES = [0, 1, 3, 2**16, 2**31 - 1, 2**31, 2**40, 2**63, -1, -(2**31)]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png(width: int, height: int, idat: bytes, ctype: int = 2, depth: int = 8) -> bytes:
    header = struct.pack(">IIBBBBB", width & 0xFFFFFFFF, height & 0xFFFFFFFF, depth, ctype, 0, 0, 0)
    return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _bomb(inflated: int = 64 << 20) -> bytes:
    """A 64x64 PNG whose image data inflates to 64 MiB of zeros (about 64 KB on the wire)."""
    z = zlib.compressobj(9)
    zeros = b"\0" * (1 << 20)
    return _png(64, 64, b"".join(z.compress(zeros) for _ in range(inflated >> 20)) + z.flush())


_GOOD = encode_png(np.zeros((8, 8, 3), np.uint8))
PNGS = [_GOOD, _GOOD[:20], _GOOD[:-5], _GOOD[:30] + b"\0" + _GOOD[31:], _bomb(), _png(4097, 16, b""),
        _png(2**31, 1, b""), _png(0, 0, b""), _png(8, 8, zlib.compress(b"\4" * 9 * 25), ctype=2),
        _png(16, 16, b"not zlib"), _png(4096, 4096, zlib.compress(b"\4" * (4096 * 3 + 1)), ctype=2),
        SIGNATURE, b"GIF89a" + bytes(40), b"\xff\xd8\xff\xe0" + bytes(40), _png(8, 8, b"", ctype=7, depth=3)]


# --- cases -----------------------------------------------------------------------------------------------------------

@dataclass
class Case:
    category: str
    frames: list  # bytes


def _valid_header(draw, job_ids) -> dict:
    mtype = draw(st.sampled_from(sorted(REPLY_OF)))
    header = {"v": 1, "type": mtype}
    if mtype in ("cancel", "status", "fetch", "submit"):
        header["job"] = draw(job_ids)
    if mtype == "fetch":
        header["since"] = draw(st.integers(0, 10))
    if mtype == "list":
        header["limit"] = draw(st.integers(1, 1000))
    if mtype == "hello":
        header["client"] = draw(st.text(max_size=20))
    if mtype == "submit":
        header["kind"] = draw(st.sampled_from(["selftest", "selftest", "generate", "teleport"]))
        header["params"] = {"steps": draw(st.integers(1, 3)), "step_s": 0.0}
    return header


class RawToken(str):
    """A JSON token written verbatim (NaN, 1e400, 5000 digits): json.dumps cannot produce them."""


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
HOSTILE_VALUE = st.one_of(st.sampled_from(PATH_IDS), st.sampled_from(ODD_TEXT), JSON_VALUES,
                          st.sampled_from(RAW_NUMBERS).map(lambda t: RawToken(t)))


def _dumps(header: dict, ascii_only: bool) -> bytes:
    raws: list[str] = []

    def default(o):
        raise TypeError(o)

    def swap(v):
        if isinstance(v, RawToken):
            raws.append(str(v))
            return f"@@RAW{len(raws) - 1}@@"
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(header), ensure_ascii=ascii_only, default=default)
    for i, raw in enumerate(raws):
        text = text.replace(f'"@@RAW{i}@@"', raw)
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8: another hostile case


_HOW = st.sampled_from(["set", "set", "add", "drop", "version", "type", "req", "frames"])
_ODD_KEY = st.sampled_from(ODD_TEXT) | st.text(max_size=10)
_VERSION = HOSTILE_VALUE | st.integers()
_TYPE = HOSTILE_VALUE | st.sampled_from(["welcome", "result", "error", "progress", "HELLO"])
_REQ = HOSTILE_VALUE | st.text(min_size=60, max_size=70)
_FRAMES = HOSTILE_VALUE | st.lists(JSON_VALUES, max_size=3)
_EXTRA = st.lists(st.binary(max_size=64), max_size=2)
_KIND = st.sampled_from(["array", "array", "png", "png", "bytes", "junk"])
_NAME = st.sampled_from(["data", "data", "reference", "..", ".", "a/b", "", "x" * 65]) | st.sampled_from(ODD_TEXT)
_DTYPE = st.sampled_from(DTYPES)
_SHAPE = st.lists(st.sampled_from(SIZES) | st.integers(0, 64), max_size=6) | HOSTILE_VALUE
_VALUE_DTYPE = st.sampled_from(["float32", "float64", "uint8", "int64"])
_VALUE = st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -0.0, 7.0])
_PNG = st.sampled_from(PNGS) | st.binary(max_size=128)
_MEDIA = st.sampled_from(["model/gltf-binary", "../x", "", "a/b c"]) | st.text(max_size=9)


@st.composite
def _mutated(draw, job_ids) -> list:
    header = _valid_header(draw, job_ids)
    how = draw(_HOW)
    key = draw(st.sampled_from(sorted(header)))
    if how == "set":
        header[key] = draw(HOSTILE_VALUE)
    elif how == "add":
        header[draw(_ODD_KEY)] = draw(HOSTILE_VALUE)
    elif how == "drop":
        header.pop(key)
    elif how == "version":
        header["v"] = draw(_VERSION)
    elif how == "type":
        header["type"] = draw(_TYPE)
    elif how == "req":
        header["req"] = draw(_REQ)
    else:
        header["frames"] = draw(_FRAMES)
    extra = draw(_EXTRA) if how == "frames" else []
    return [_dumps(header, draw(st.booleans()))] + extra


@st.composite
def _payload(draw, job_ids) -> list:
    """A submit with payload frames: wrong dtypes and shapes, huge declared sizes, non-PNGs, bombs, odd names."""
    descs, frames = [], []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(_KIND)
        name = draw(_NAME)
        desc = {"name": name, "kind": kind}
        if kind == "array":
            desc["dtype"] = draw(_DTYPE)
            desc["shape"] = draw(_SHAPE)
            if draw(st.booleans()):  # well-formed: right byte count, hostile values
                dtype = draw(_VALUE_DTYPE)
                n = draw(st.integers(0, 64))
                values = [draw(_VALUE) for _ in range(n)]
                desc.update(dtype=dtype, shape=draw(st.sampled_from([[n], [n, 1], [1, n], [n, 0, 2]])))
                with np.errstate(all="ignore"):
                    frames.append(np.asarray(values, np.float64).astype(dtype, casting="unsafe").tobytes()
                                  if dtype.startswith("float") else np.zeros(n, dtype).tobytes())
            else:
                frames.append(draw(st.binary(max_size=256)))
        elif kind == "png":
            frames.append(draw(_PNG))
        elif kind == "bytes":
            desc["media_type"] = draw(_MEDIA)
            frames.append(draw(st.binary(max_size=128)))
        else:
            desc = draw(HOSTILE_VALUE)
            frames.append(b"")
        descs.append(desc)
    if draw(st.integers(0, 9)) == 0:  # frame count mismatch
        frames = frames[:-1] if draw(st.booleans()) else frames + [b"extra"]
    header = {"v": 1, "type": "submit", "job": draw(job_ids), "kind": "selftest", "params": {"steps": 1},
              "frames": descs}
    return [_dumps(header, True)] + frames


@st.composite
def _numbers(draw, job_ids) -> list:
    """NaN, infinities, overflowing and out-of-range numbers where the protocol or a job expects numbers."""
    raw = RawToken(draw(st.sampled_from(RAW_NUMBERS)))
    target = draw(st.sampled_from(["steps", "step_s", "result_bytes", "fail_at", "since", "limit", "v"]))
    if target in ("since", "limit", "v"):
        header = {"v": 1, "type": "fetch" if target == "since" else "list"}
        if target == "since":
            header["job"] = draw(job_ids)
        header[target] = raw
    else:
        header = {"v": 1, "type": "submit", "job": draw(job_ids), "kind": "selftest", "params": {target: raw}}
    return [_dumps(header, True)]


@st.composite
def hostile_case(draw, job_ids=st.text("0123456789abcdef", min_size=32, max_size=32)) -> Case:
    category = draw(st.sampled_from(["random_frames", "truncated_json", "valid", "mutated", "mutated", "payload",
                                     "payload", "numbers", "huge_header", "deep_json"]))
    if category == "random_frames":
        frames = draw(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
    elif category == "truncated_json":
        full = _dumps(_valid_header(draw, job_ids), draw(st.booleans()))
        frames = [full[: draw(st.integers(0, len(full) - 1))]]
    elif category == "valid":
        frames = [_dumps(_valid_header(draw, job_ids), True)]
    elif category == "mutated":
        frames = draw(_mutated(job_ids))
    elif category == "payload":
        frames = draw(_payload(job_ids))
    elif category == "numbers":
        frames = draw(_numbers(job_ids))
    elif category == "huge_header":
        frames = [_dumps({"v": 1, "type": "hello", "client": "x" * draw(st.sampled_from([65_530, 70_000, 500_000]))},
                         True)]
    else:
        depth = draw(st.sampled_from([50, 999, 1001, 20_000]))
        frames = [b'{"v": 1, "type": "hello", "client": ' + b"[" * depth + b"]" * depth + b"}"]
    return Case(category, frames)


def hypothesis_cases(n: int, seed_value: int) -> list[Case]:
    """n cases of :func:`hostile_case`, reproducibly for a seed (~3 ms each: the fast streams mutate these)."""
    cases: list[Case] = []

    @seed(seed_value)
    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(hostile_case())
    def collect(case: Case) -> None:
        cases.append(case)

    collect()
    return cases


def with_req(case: Case, req: str) -> Optional[str]:
    """Give a case whose header is a JSON object a request id (unless it already has one); returns the req a
    reply must carry: the header's own when the server's strict parser reads it, else what a plain search for
    ``"req": "<plain id>"`` finds (None when the header is over the size limit) — see docs/PROTOCOL.md."""
    try:
        header = json.loads(case.frames[0])
    except (ValueError, RecursionError):
        header = None
    text = case.frames[0]
    if isinstance(header, dict) and "req" not in header and text.startswith(b"{") and len(text) + 40 <= P.MAX_HEADER:
        rest = text[1:].lstrip()
        case.frames[0] = b'{"req": "' + req.encode() + (b'"' if rest.startswith(b"}") else b'", ') + rest
    try:
        parsed = P.parse_header(case.frames[0])
    except SpecError as e:
        return None if e.code == "header_too_large" else P.peek_req(case.frames[0])
    value = parsed.get("req") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) and len(value) <= 64 else None


def followups(case: Case, reply: list) -> int:
    """Messages that follow the direct reply: a ``fetch`` of a finished job gets its final state pushed after the
    ``job_state`` reply (``result``, or ``job_state`` + ``error``), without ``req``."""
    try:
        mtype = json.loads(case.frames[0]).get("type")
        msg = P.decode(reply, P.MAX_RESULT_FRAME, allowed=SERVER_TYPES)
    except (ValueError, AttributeError, RecursionError, SpecError):
        return 0
    if mtype != "fetch" or msg.type != "job_state" or msg.body.state not in P.FINAL_STATES:
        return 0
    return 1 if msg.body.state == "done" else 2


def judge_followup(job_reply: list, pushed: list) -> Optional[str]:
    """None if a pushed message is a req-less final message about the fetched job."""
    job = P.decode(job_reply, P.MAX_RESULT_FRAME).body.job
    try:
        msg = P.decode(pushed, P.MAX_RESULT_FRAME, allowed=SERVER_TYPES)
    except SpecError as e:
        return f"pushed message breaks the protocol: {e}"
    if msg.req is not None or getattr(msg.body, "job", None) != job or msg.type not in ("job_state", "error", "result"):
        return f"unexpected push after a fetch: {msg.type} req={msg.req!r}"
    return None


def judge(case: Case, expected_req: Optional[str], reply: list, codes: set[str]) -> Optional[str]:
    """None if the reply is what the protocol promises for this request, else what is wrong."""
    try:
        msg = P.decode(reply, P.MAX_RESULT_FRAME, allowed=SERVER_TYPES)
    except SpecError as e:
        return f"reply breaks the protocol: {e}"
    if expected_req is not None and msg.req != expected_req:
        return f"reply carries req {msg.req!r}, expected {expected_req!r}"
    if msg.type == "error":
        e = msg.body
        if e.code == "internal":
            return f"internal error: {e.message}"
        if e.code not in codes:
            return f"undocumented error code {e.code!r}"
        if not (e.message and e.field and e.expected):
            return f"error without message/field/expected: {e}"
        return None
    try:
        mtype = json.loads(case.frames[0]).get("type")
    except (ValueError, AttributeError, RecursionError):
        mtype = None
    if REPLY_OF.get(mtype if isinstance(mtype, str) else "") != msg.type:
        return f"a {msg.type} reply to a request of type {mtype!r}"
    return None


# --- mutation (libFuzzer-style, seeded): cheap variants of hypothesis' cases -----------------------------------------

TOKENS = [b"NaN", b"Infinity", b"1e999", b"-1", b"9" * 400, b'"..\\/..\\/"', b"\xff\xfe", b"\xc0\xaf", b"\x00", b"{",
          b"[", b"}", b'"', b"\\", b'"\\ud800"', b'"frames":', b'"req":', b'"v":2', b"null", b"\xe2\x80\xae"]


def mutate(rng, case: Case, other: Case) -> Case:
    """One random edit of a case: byte flips, truncation, interesting tokens, dropped or spliced frames."""
    frames = list(case.frames)
    head = bytearray(frames[0])
    op = rng.randrange(8)
    if op == 0 and head:
        for _ in range(rng.randint(1, 4)):
            head[rng.randrange(len(head))] = rng.randrange(256)
    elif op == 1:
        head = head[: rng.randint(0, len(head))]
    elif op == 2:
        pos = rng.randint(0, len(head))
        head[pos:pos + rng.randint(0, 3)] = rng.choice(TOKENS)
    elif op == 3 and len(frames) > 1:
        i = rng.randrange(1, len(frames))
        frames.insert(i, frames[i]) if rng.random() < 0.5 else frames.pop(i)
    elif op == 4:
        frames = [bytes(head)] + other.frames[1:]
    elif op == 5 and len(frames) > 1:
        i = rng.randrange(1, len(frames))
        frames[i] = frames[i][: rng.randint(0, len(frames[i]))] + bytes(rng.randint(0, 64))
    elif op == 6:
        quotes = [i for i, b in enumerate(head) if b == 0x22]
        if len(quotes) >= 2:
            a = rng.randrange(len(quotes) - 1)
            value = json.dumps(rng.choice(PATH_IDS + ODD_TEXT[:12])).encode("utf-8", "surrogatepass")
            head[quotes[a]:quotes[a + 1] + 1] = value
    else:
        head = bytearray(other.frames[rng.randrange(len(other.frames))])
    frames[0] = bytes(head)
    return Case("mutant_" + case.category, frames)


# --- big headers: 10-60 KiB, failing in every way a header can ----------------------------------------------------
# Plain random generators (no hypothesis: the soak needs thousands a second). Each returns the header bytes of size
# about ``n``; a req is embedded where the shape allows, so the reply can be matched.

def _fill(unit: bytes, n: int) -> bytes:
    return unit * max(1, n // len(unit))


BIG_HEADERS: dict[str, Callable[[int], bytes]] = {
    "deep_open": lambda n: _fill(b"[", n),  # the reported case: unparseable, unbounded nesting
    "deep_closed": lambda n: _fill(b"[", n // 2) + _fill(b"]", n // 2),
    "deep_objects": lambda n: _fill(b'{"a":', n),
    "deep_in_field": lambda n: b'{"req":"deep","v":1,"type":"hello","client":' + _fill(b"[", n // 2) + _fill(b"]", n // 2) + b"}",
    "just_too_deep": lambda n: b'{"req":"d33","v":1,"type":"hello","client":' + b"[" * 33 + b"]" * 33 + b'}' + b" " * n,
    "many_numbers": lambda n: b'{"req":"nums","v":1,"type":"hello","x":[' + _fill(b"1,", n) + b"1]}",
    "many_strings": lambda n: b'{"req":"strs","v":1,"type":"hello","x":[' + _fill(b'"a",', n) + b'"a"]}',
    "many_keys": lambda n: b'{"req":"keys","v":1,"type":"hello",' + b",".join(b'"k%d":0' % i for i in range(n // 9)) + b"}",
    "unterminated": lambda n: b'{"req":"unt","v":1,"type":"hello","client":"' + _fill(b"x", n),
    "escapes": lambda n: b'{"req":"esc","v":1,"type":"hello","client":"' + _fill(b'\\"[', n) + b'"}',
    "bad_escape": lambda n: b'{"req":"besc","v":1,"type":"hello","client":"' + _fill(b"x", n) + b'\\q"}',
    "bad_utf8": lambda n: b'{"req":"utf","v":1,"type":"hello","client":"' + _fill(b"\xff\xfe", n) + b'"}',
    "lone_surrogates": lambda n: b'{"req":"sur","v":1,"type":"hello","client":"' + _fill(b"\\ud800", n) + b'"}',
    "brackets_in_text": lambda n: b'{"req":"txt","v":1,"type":"hello","client":"' + _fill(b"[{,:", n) + b'"}',
    "long_string_field": lambda n: b'{"req":"long","v":1,"type":"hello","client":"' + _fill(b"x", n) + b'"}',
    "huge_int": lambda n: b'{"req":"int","v":1,"type":"list","limit":' + _fill(b"9", n) + b"}",
    "float_overflow": lambda n: b'{"req":"flt","v":1,"type":"list","limit":1e400,"pad":"' + _fill(b"x", n) + b'"}',
    "nan_tokens": lambda n: b'{"req":"nan","v":1,"type":"hello","x":[' + _fill(b"NaN,", min(n, 8000)) + b"NaN]}",
    "trailing_garbage": lambda n: b'{"req":"tail","v":1,"type":"heartbeat"}' + _fill(b"]", n),
    "not_an_object": lambda n: b"[" + _fill(b'"x",', min(n, 8000)) + b'"x"]',
    "wrong_version": lambda n: b'{"req":"ver","v":2,"type":"hello","client":"' + _fill(b"x", min(n, 60)) + b'","pad":"' + _fill(b"y", n) + b'"}',
    "unknown_key": lambda n: b'{"req":"key","v":1,"type":"hello","' + _fill(b"k", n) + b'":1}',
    "oversize": lambda n: _fill(b"[", P.MAX_HEADER + 1 + n),
    "nul_bytes": lambda n: _fill(b"\x00", n),
}


def big_header(rng, kind: Optional[str] = None) -> Case:
    """One header of 10-60 KiB of the given (or a random) class of :data:`BIG_HEADERS`."""
    kind = kind or rng.choice(sorted(BIG_HEADERS))
    return Case("big:" + kind, [BIG_HEADERS[kind](rng.randint(10 << 10, 60 << 10))])

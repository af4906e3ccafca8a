"""Unit tests of shared.spec and shared.protocol: validation, framing, and malformed input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared import png as pngcodec
from shared import protocol as P
from shared.jobs import JOB_KINDS, GenerateParams, validate_inputs
from shared.spec import SpecError, from_dict, to_dict

JOB = "0123456789abcdef0123456789abcdef"


def header(**fields) -> bytes:
    return json.dumps({"v": 1, **fields}).encode()


def test_round_trip_with_every_payload_kind():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    png = pngcodec.encode_png(np.full((5, 7, 3), 200, np.uint8))
    frames = P.encode(P.Submit(JOB, "selftest", {"steps": 2}), {"a": arr, "img": P.Png(png),
                                                                 "blob": P.Blob(b"xyz", "model/gltf-binary")}, req="r1")
    msg = P.decode([bytes(f) for f in frames])
    assert msg.type == "submit" and msg.req == "r1" and msg.body.params == {"steps": 2}
    np.testing.assert_array_equal(msg.payloads["a"], arr)
    assert msg.payloads["img"].data == png and msg.payloads["blob"] == P.Blob(b"xyz", "model/gltf-binary")


@pytest.mark.parametrize("frames, code", [
    ([], "bad_frame"),
    ([b"not json"], "bad_json"),
    ([b"\xff\xfe"], "bad_json"),
    ([b"[1, 2]"], "bad_json"),
    ([json.dumps({"v": 99, "type": "hello"}).encode()], "version_mismatch"),
    ([header(type="teleport")], "unknown_type"),
    ([header(type="hello", client="x", extra=1)], "unknown_field"),
    ([header(type="status")], "missing_field"),
    ([header(type="status", job="../../etc/passwd")], "invalid_field"),
    ([header(type="hello"), b"stray"], "frame_count"),
    ([header(type="submit", job=JOB, kind="selftest", frames=[{"name": "a", "kind": "array", "dtype": "float32",
                                                                "shape": [2, 2]}])], "frame_count"),
    ([header(type="submit", job=JOB, kind="selftest", frames=[{"name": "a", "kind": "array", "dtype": "float32",
                                                                "shape": [1000, 1000]}]), b"\0" * 16], "bad_array"),
    ([header(type="submit", job=JOB, kind="selftest", frames=[{"name": "a", "kind": "array", "dtype": "object",
                                                                "shape": [1]}]), b"\0" * 8], "invalid_field"),
    ([header(type="submit", job=JOB, kind="selftest", frames=[{"name": "a", "kind": "png"}]), b"GIF89a"], "bad_png"),
    ([b'{"v": 1, "type": "list", "limit": NaN}'], "bad_json"),
    ([b'{"v": 1, "type": "list", "limit": 1e999}'], "bad_json"),
    ([header(type="list", limit=10**6)], "invalid_field"),
    ([b"[" * 100_000], "header_too_large"),
    ([b"[" * 30_000 + b"]" * 30_000], "header_too_many_values"),
])
def test_malformed_messages_raise_protocol_errors_with_codes(frames, code):
    with pytest.raises(SpecError) as info:
        P.decode(frames)
    assert info.value.code == code
    d = info.value.to_dict()
    assert d["field"] and d["expected"] and d["message"]


def test_oversize_frame_is_refused_before_use():
    frames = P.encode(P.Submit(JOB, "selftest", {}), {"a": np.zeros(1000, np.uint8)})
    with pytest.raises(SpecError) as info:
        P.decode(frames, max_frame=100)
    assert info.value.code == "frame_too_large"


def test_decompression_bomb_png_is_rejected_by_its_header():
    bomb = bytearray(pngcodec.encode_png(np.zeros((4, 4, 3), np.uint8)))
    bomb[16:24] = (60000).to_bytes(4, "big") * 2  # declare 60000 x 60000 and fix the CRC
    import struct, zlib

    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])))
    frames = P.encode(P.Submit(JOB, "selftest", {}), {"img": P.Png(bytes(bomb))})
    with pytest.raises(SpecError) as info:
        P.decode(frames)
    assert info.value.code == "bad_png"


def test_spec_errors_name_field_expected_received_and_hint():
    with pytest.raises(SpecError) as info:
        from_dict(GenerateParams, {"cfg": 500.0})
    e = info.value
    assert e.field == "cfg" and "[0.0, 50.0]" in e.expected and e.received == "500.0" and e.hint
    with pytest.raises(SpecError) as info:
        from_dict(GenerateParams, {"rig": {"expressions": {"jawOpen": float("nan")}}})
    assert info.value.field == "rig.expressions['jawOpen']" and "finite" in info.value.expected
    with pytest.raises(SpecError) as info:
        from_dict(GenerateParams, {"seed": True})
    assert info.value.field == "seed"


def test_spec_round_trips_defaults():
    p = GenerateParams(prompt="a man laughing")
    assert from_dict(GenerateParams, json.loads(json.dumps(to_dict(p)))) == p


def test_inputs_are_checked_against_the_job_kind():
    kind = JOB_KINDS["generate"]
    v = np.zeros((4, 3), np.float32)
    f = np.array([[0, 1, 2], [1, 2, 3]], np.int32)
    validate_inputs(kind, {"vertices": v, "faces": f})
    with pytest.raises(SpecError, match="inputs.faces"):
        validate_inputs(kind, {"vertices": v, "faces": f + 5})
    with pytest.raises(SpecError, match="inputs.vertices"):
        validate_inputs(kind, {"vertices": v.astype(np.float64), "faces": f})
    with pytest.raises(SpecError, match="inputs.vertices"):
        validate_inputs(kind, {"vertices": np.zeros((4, 2), np.float32), "faces": f})
    with pytest.raises(SpecError, match="inputs.reference"):
        validate_inputs(kind, {"vertices": v, "faces": f, "reference": np.zeros(3, np.float32)})
    with pytest.raises(SpecError, match="inputs.vertices"):
        validate_inputs(kind, {"vertices": np.full((4, 3), np.inf, np.float32), "faces": f})


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=4))
def test_random_frames_never_raise_anything_but_protocol_errors(frames):
    try:
        P.decode(frames)
    except SpecError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20), lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                                  max_size=4)))
def test_random_json_headers_never_crash(value):
    for h in ({"v": 1, "type": "submit", "job": JOB, "kind": "selftest", "params": value},
              {"v": 1, "type": "list", "limit": value}, {"v": 1, "type": "fetch", "job": value}):
        try:
            P.decode([json.dumps(h).encode()])
        except SpecError:
            pass


def test_png_codec_round_trip_and_filters():
    rng = np.random.default_rng(0)
    for c in (1, 3, 4):
        img = rng.integers(0, 256, (9, 13, c), dtype=np.uint8)
        np.testing.assert_array_equal(pngcodec.decode_png(pngcodec.encode_png(img)), img)
    PIL = pytest.importorskip("PIL.Image")
    import io

    img = rng.integers(0, 256, (16, 11, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.fromarray(img).save(buf, format="PNG", optimize=True)  # Pillow uses adaptive filters
    np.testing.assert_array_equal(pngcodec.decode_png(buf.getvalue()), img)


def test_protocol_doc_covers_every_message_and_error_code():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "PROTOCOL.md").read_text()
    for name in P.MESSAGE_TYPES:
        assert f"### `{name}`" in doc
    for code in ("version_mismatch", "bad_png", "frame_too_large", "job_id_conflict", "too_many_jobs", "unknown_job"):
        assert f"`{code}`" in doc

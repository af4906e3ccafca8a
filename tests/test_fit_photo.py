"""load_photo: every common encoding to float32 RGB 0..1, EXIF orientation applied, bad input named and explained."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from backend.fit import PhotoError, load_photo
from shared.protocol import MAX_IMAGE_SIDE


def _encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)


def test_rgb_png_and_path_agree(rgb, tmp_path):
    data = _encode(Image.fromarray(rgb))
    path = tmp_path / "p.png"
    path.write_bytes(data)
    for source in (data, path, str(path)):
        out = load_photo(source)
        assert out.dtype == np.float32 and out.shape == (40, 60, 3)
        np.testing.assert_array_equal(np.round(out * 255).astype(np.uint8), rgb)


def test_sixteen_bit_gray_keeps_its_precision():
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 31).astype(np.uint16)  # not multiples of 257
    out = load_photo(_encode(Image.fromarray(ramp)))  # uint16 -> mode I;16, a 16-bit PNG
    assert out.shape == (32, 64, 3)
    np.testing.assert_allclose(out[..., 0], ramp / 65535.0, rtol=0, atol=1e-6)  # 8 bits would be off by ~2e-3
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def _png16_rgb(a: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one): signature, IHDR (depth 16, colour type 2), IDAT, IEND."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_sixteen_bit_rgb_loads():
    a = (np.random.default_rng(2).random((20, 30, 3)) * 65535).astype(np.uint16)
    out = load_photo(_png16_rgb(a))
    assert out.shape == (20, 30, 3)
    np.testing.assert_allclose(out, a / 65535.0, atol=1.01 / 255)  # Pillow decodes 16-bit RGB at 8 bits


def test_alpha_composites_over_black_and_palette_and_gray(rgb):
    rgba = np.concatenate([rgb, np.full((40, 60, 1), 255, np.uint8)], axis=-1)
    rgba[:, :30, 3] = 0
    out = load_photo(_encode(Image.fromarray(rgba, mode="RGBA")))
    assert out[:, :30].max() == 0.0
    np.testing.assert_array_equal(np.round(out[:, 30:] * 255).astype(np.uint8), rgb[:, 30:])
    pal = Image.fromarray(rgb).quantize(16)
    out = load_photo(_encode(pal))
    np.testing.assert_array_equal(np.round(out * 255).astype(np.uint8), np.asarray(pal.convert("RGB")))
    gray = Image.fromarray(rgb[..., 0])
    out = load_photo(_encode(gray, "JPEG", quality=95))
    assert out.shape == (40, 60, 3) and np.array_equal(out[..., 0], out[..., 1])
    la = Image.fromarray(np.stack([rgb[..., 0], np.full((40, 60), 128, np.uint8)], -1), mode="LA")
    np.testing.assert_allclose(load_photo(_encode(la))[..., 0], rgb[..., 0] / 255.0 * (128 / 255.0), atol=1e-6)


def test_exif_orientation_is_applied(rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    data = _encode(Image.fromarray(rgb), "JPEG", quality=100, exif=exif.tobytes())
    out = load_photo(data)
    assert out.shape == (60, 40, 3)  # displayed upright: the stored 40x60 becomes 60x40
    plain = load_photo(_encode(Image.fromarray(rgb), "JPEG", quality=100))
    np.testing.assert_allclose(out, np.rot90(plain, k=-1), atol=2 / 255)


@pytest.mark.parametrize("data, code", [
    (b"", "invalid_image"),
    (b"this is not an image at all", "invalid_image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "invalid_image"),  # a PNG signature, then garbage
])
def test_bad_bytes_fail_naming_the_image(data, code):
    with pytest.raises(PhotoError) as e:
        load_photo(data, name="inputs.reference")
    assert e.value.code == code
    assert str(e.value).startswith("inputs.reference: expected")
    assert e.value.hint


def test_truncated_jpeg_fails_cleanly(rgb):
    data = _encode(Image.fromarray(rgb), "JPEG")
    with pytest.raises(PhotoError) as e:
        load_photo(data[: len(data) // 2], name="portrait")
    assert "portrait" in str(e.value) and "PNG or JPEG" in e.value.hint


def test_limits_missing_and_tiny(tmp_path):
    big = Image.new("L", (MAX_IMAGE_SIDE + 1, 16))  # refused from the header, before decoding
    with pytest.raises(PhotoError) as e:
        load_photo(_encode(big), name="inputs.reference")
    assert e.value.code == "too_large" and str(MAX_IMAGE_SIDE) in str(e.value) and "downscale" in e.value.hint
    with pytest.raises(PhotoError) as e:
        load_photo(tmp_path / "nope.jpg")
    assert e.value.code == "not_found"
    with pytest.raises(PhotoError) as e:
        load_photo(_encode(Image.new("RGB", (8, 8))))
    assert e.value.code == "too_small"

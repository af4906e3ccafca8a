"""load_photo: every common encoding to float32 RGB 0..1, EXIF orientation applied, bad input named and explained."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

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


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png16_rgb(a: np.ndarray, exif: bytes = b"") -> bytes:
    """A 16-bit RGB PNG written byte by byte (Pillow cannot write one): signature, IHDR (depth 16, colour type 2),
    eXIf (when given), IDAT, IEND."""
    import struct
    import zlib

    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + (_chunk(b"eXIf", exif) if exif else b"") + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def astronaut16(astronaut_path) -> np.ndarray:
    """uint16 [512, 512, 3]: the astronaut photo with 16-bit detail (low bytes that 8-bit decoding would lose)."""
    a = np.asarray(Image.open(astronaut_path).convert("RGB"), dtype=np.uint16) * 257
    low = np.random.default_rng(3).integers(0, 200, a.shape, dtype=np.uint16)
    return np.minimum(a + low, 65535).astype(np.uint16)


def test_sixteen_bit_rgb_and_rgba_files_load_at_full_precision(astronaut16, tmp_path):
    """Real 16-bit PNG and TIFF files (written by OpenCV, and a PNG written byte by byte) keep all 16 bits."""
    import cv2

    want = astronaut16 / 65535.0
    for suffix in (".png", ".tif"):
        path = tmp_path / f"astronaut16{suffix}"
        assert cv2.imwrite(str(path), astronaut16[..., ::-1])  # OpenCV writes BGR
        out = load_photo(path)
        assert out.dtype == np.float32 and out.shape == (512, 512, 3)
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-6)  # 8 bits would be off by up to 2e-3
    out = load_photo(_png16_rgb(astronaut16[:40, :60]))
    np.testing.assert_allclose(out, want[:40, :60], rtol=0, atol=1e-6)
    alpha = np.full((40, 60, 1), 65535, np.uint16)
    alpha[:, :30] = 0
    path = tmp_path / "rgba16.png"
    assert cv2.imwrite(str(path), np.concatenate([astronaut16[:40, :60, ::-1], alpha], axis=-1))
    out = load_photo(path)
    assert out[:, :30].max() == 0.0  # transparent over black, as 8-bit RGBA
    np.testing.assert_allclose(out[:, 30:], want[:40, 30:60], rtol=0, atol=1e-6)


def test_sixteen_bit_rgb_honours_exif_orientation(astronaut16):
    """Orientation 6 ("rotate 90 CW to display") and 3 (180) in the PNG's eXIf chunk: displayed upright, 16 bits."""
    a = astronaut16[:40, :60]
    for tag, upright in ((6, np.rot90(a, k=-1)), (3, a[::-1, ::-1]), (8, np.rot90(a, k=1))):
        exif = Image.Exif()
        exif[0x0112] = tag
        out = load_photo(_png16_rgb(a, exif.tobytes()))
        # Pillow's own exif_transpose of the 8-bit decode agrees on the geometry
        pil = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(_png16_rgb(a, exif.tobytes())))))
        assert out.shape == upright.shape == pil.shape
        np.testing.assert_allclose(out, upright / 65535.0, rtol=0, atol=1e-6)
        np.testing.assert_allclose(out * 255, pil, rtol=0, atol=1.0)


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

"""shared.exif: the EXIF orientation the add-on applies (Blender ignores it) agrees with Pillow's exif_transpose,
which the backend's photo decoder uses, for every orientation, in JPEG and PNG files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from shared.exif import orientation, upright


def _photo(fmt: str, value: int | None) -> bytes:
    rng = np.random.default_rng(value or 0)
    pixels = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)  # not square: a turn changes the shape
    im = Image.fromarray(pixels)
    buf = io.BytesIO()
    kw = {}
    if value is not None:
        exif = im.getexif()
        exif[0x0112] = value
        kw["exif"] = exif.tobytes()
    im.save(buf, format=fmt, **kw, **({"quality": 100} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("value", [1, 2, 3, 4, 5, 6, 7, 8])
def test_orientation_and_upright_match_pillow(fmt, value):
    data = _photo(fmt, value)
    assert orientation(data) == value
    decoded = Image.open(io.BytesIO(data))
    stored = np.asarray(decoded.convert("RGB"))  # as Blender shows it: the tag ignored
    want = np.asarray(ImageOps.exif_transpose(decoded).convert("RGB"))
    np.testing.assert_array_equal(upright(stored, orientation(data)), want)


def test_no_or_damaged_exif_is_upright():
    assert orientation(_photo("JPEG", None)) == 1 and orientation(_photo("PNG", None)) == 1
    assert orientation(b"GIF89a") == 1 and orientation(b"") == 1
    damaged = bytearray(_photo("JPEG", 6))
    at = bytes(damaged).index(b"Exif\x00\x00") + 6
    damaged[at:at + 2] = b"XX"  # not a TIFF byte order
    assert orientation(bytes(damaged)) == 1
    truncated = _photo("JPEG", 6)[:30]
    assert orientation(truncated) in (1, 6)  # never raises on a cut file
    px = np.arange(24).reshape(2, 4, 3)
    assert upright(px, 1) is px and upright(px, 9) is px

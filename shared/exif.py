"""EXIF orientation without an imaging library: read the tag from a JPEG (APP1) or PNG (eXIf) file and apply it to
pixels. Blender ignores the tag, so the add-on uses this to send a phone photo upright, as the backend's decoder
(``backend.fit.load_photo``, Pillow's ``exif_transpose``) sees the same file.

Pixels are numpy [H, W, ...] with row 0 at the top. Orientation values 1..8 as in the EXIF 2.3 standard.
"""

from __future__ import annotations

import struct

import numpy as np

ORIENTATION_TAG = 0x0112


def orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) of a JPEG or PNG file's bytes; 1 when absent, unreadable or another format."""
    try:
        tiff = _jpeg_exif(data) if data[:2] == b"\xff\xd8" else _png_exif(data)
        value = _tiff_orientation(tiff) if tiff else 1
    except (struct.error, IndexError, KeyError, ValueError):  # a damaged block: treat as upright
        return 1
    return value if 1 <= value <= 8 else 1


def upright(pixels: np.ndarray, value: int) -> np.ndarray:
    """``pixels`` [H, W, ...] as displayed for EXIF orientation ``value`` (what Pillow's ``exif_transpose`` does)."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
           8: lambda a: np.rot90(a, 1)}
    op = ops.get(int(value))
    return np.ascontiguousarray(op(pixels)) if op else pixels


def _jpeg_exif(data: bytes) -> bytes | None:
    """The TIFF block of a JPEG's ``Exif`` APP1 segment (None without one); stops at the scan data."""
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no metadata beyond
            return None
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        body = data[i + 4:i + 2 + length]
        if marker == 0xE1 and body[:6] == b"Exif\x00\x00":
            return body[6:]
        i += 2 + length
    return None


def _png_exif(data: bytes) -> bytes | None:
    """The TIFF block of a PNG's ``eXIf`` chunk (None without one)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    i = 8
    while i + 8 <= len(data):
        (length,) = struct.unpack(">I", data[i:i + 4])
        kind = data[i + 4:i + 8]
        if kind == b"eXIf":
            return data[i + 8:i + 8 + length]
        if kind in (b"IDAT", b"IEND"):  # eXIf must come before the image data
            return None
        i += 12 + length
    return None


def _tiff_orientation(tiff: bytes) -> int:
    """The orientation entry of IFD0 in a TIFF block (1 when absent)."""
    order = {b"II": "<", b"MM": ">"}[tiff[:2]]  # KeyError: not a TIFF block
    magic, ifd = struct.unpack(order + "HI", tiff[2:8])
    if magic != 42:
        raise ValueError("not a TIFF header")
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k:ifd + 14 + 12 * k]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag == ORIENTATION_TAG and kind == 3:  # SHORT, stored in the first 2 bytes of the value field
            return struct.unpack(order + "H", entry[8:10])[0]
    return 1

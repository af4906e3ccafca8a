"""Minimal PNG encode / inspect / decode with the standard library (shared/ cannot use Pillow).

Only what the protocol needs: 8-bit greyscale, RGB and RGBA, non-interlaced. :func:`png_info` checks a PNG's
structure and its declared size *before* anything is decompressed, and :func:`decode_png` never inflates more than
the declared image needs, so a decompression bomb costs nothing.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 8192  # pixels; the protocol applies its own, lower limit
_CHANNELS = {0: 1, 2: 3, 6: 4}  # PNG colour type -> channels (grey, RGB, RGBA)


class PngError(ValueError):
    pass


@dataclass(frozen=True)
class PngInfo:
    width: int
    height: int
    channels: int
    bit_depth: int
    interlaced: bool


def _chunks(data: bytes):
    data = memoryview(data)  # chunk bodies are views: checking a large PNG copies nothing
    pos = len(SIGNATURE)
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise PngError("truncated PNG chunk")
        body = data[pos + 8:pos + 8 + length]
        if zlib.crc32(body, zlib.crc32(ctype)) != struct.unpack(">I", data[end - 4:end])[0]:
            raise PngError(f"bad CRC in PNG chunk {ctype!r}")
        yield ctype, body
        pos = end
        if ctype == b"IEND":
            return
    raise PngError("PNG without IEND chunk (truncated?)")


def png_info(data: bytes) -> PngInfo:
    """Structure and declared size of a PNG, without decompressing it. Raises :class:`PngError`."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or bytes(data[:8]) != SIGNATURE:
        raise PngError("not a PNG (wrong signature)")
    data = bytes(data[:33]) if len(data) < 33 else data
    if len(data) < 33 or bytes(data[12:16]) != b"IHDR":
        raise PngError("PNG without IHDR header")
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", bytes(data[16:29]))
    if zlib.crc32(bytes(data[12:29])) != struct.unpack(">I", bytes(data[29:33]))[0]:
        raise PngError("bad CRC in PNG header")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise PngError(f"PNG size {width}x{height} outside 1..{MAX_SIDE}")
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(ctype)
    if channels is None or depth not in (1, 2, 4, 8, 16):
        raise PngError(f"invalid PNG colour type {ctype} / bit depth {depth}")
    return PngInfo(width, height, channels, depth, bool(interlace))


def png_check(data: bytes) -> PngInfo:
    """:func:`png_info` plus every chunk's length and CRC up to IEND, and at least one IDAT. Nothing inflated."""
    info = png_info(data)
    if b"IDAT" not in {ctype for ctype, _ in _chunks(data)}:
        raise PngError("PNG without image data (IDAT)")
    return info


def encode_png(image: np.ndarray, level: int = 6) -> bytes:
    """uint8 [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] -> PNG bytes."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise PngError(f"encode_png needs uint8 pixels, got {img.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape
    ctype = {1: 0, 3: 2, 4: 6}.get(c)
    if ctype is None:
        raise PngError(f"encode_png needs 1, 3 or 4 channels, got {c}")
    raw = np.concatenate([np.zeros((h, 1), np.uint8), img.reshape(h, w * c)], axis=1)  # filter type 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)
    return SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), level)) + chunk(b"IEND", b"")


def decode_png(data: bytes, max_pixels: int = 4096 * 4096) -> np.ndarray:
    """PNG bytes -> uint8 [H, W, C] (C = 1, 3 or 4). 8-bit, non-interlaced only; bounded inflation."""
    info = png_info(data)
    if info.width * info.height > max_pixels:
        raise PngError(f"PNG has {info.width * info.height} pixels, more than {max_pixels}")
    c = _CHANNELS.get({1: 0, 3: 2, 4: 6}.get(info.channels, -1))
    if info.bit_depth != 8 or info.interlaced or c is None:
        raise PngError("decode_png supports 8-bit, non-interlaced greyscale/RGB/RGBA PNGs only")
    stride = info.width * c
    need = info.height * (stride + 1)
    inflater, out = zlib.decompressobj(), bytearray()
    for ctype, body in _chunks(data):
        if ctype == b"IDAT":
            out += inflater.decompress(body, need + 1 - len(out))
            if len(out) > need:
                raise PngError("PNG image data larger than its header declares")
    if len(out) != need:
        raise PngError(f"PNG image data has {len(out)} bytes, header declares {need}")
    return _unfilter(np.frombuffer(bytes(out), np.uint8).reshape(info.height, stride + 1), c).reshape(
        info.height, info.width, c)


def _unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG's per-row filters (types 0-4). rows uint8 [H, 1 + stride] -> uint8 [H, stride]."""
    h, stride = rows.shape[0], rows.shape[1] - 1
    out = np.zeros((h, stride), np.uint8)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        ftype, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        elif ftype in (1, 3, 4):
            cur = np.zeros(stride, np.int32)
            for x in range(stride):  # rare in our traffic (we encode with filter 0); correctness over speed
                a = cur[x - bpp] if x >= bpp else 0
                b, cc = prev[x], (prev[x - bpp] if x >= bpp else 0)
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - cc
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
                cur[x] = (line[x] + pred) & 0xFF
        else:
            raise PngError(f"invalid PNG filter type {ftype}")
        out[y] = cur
        prev = cur
    return out

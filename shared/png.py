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

from .errors import JokerError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_SIDE = 8192  # pixels; the protocol applies its own, lower limit
_CHANNELS = {0: 1, 2: 3, 6: 4}  # PNG colour type -> channels (grey, RGB, RGBA)


class PngError(JokerError, ValueError):
    """Bytes that are not a PNG this module reads (the protocol reports it as ``bad_png``)."""

    default_code = "bad_png"
    default_hint = "send an 8-bit, non-interlaced greyscale, RGB or RGBA PNG"


@dataclass(frozen=True)
class PngInfo:
    width: int
    height: int
    channels: int
    bit_depth: int
    interlaced: bool


def _chunks(data: bytes | memoryview):
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
    """Undo PNG's per-row filters (types 0-4). rows uint8 [H, 1 + stride] -> uint8 [H, stride].

    Sub, Average and Paeth depend on the pixel to the left, so a per-pixel loop would let a tiny hostile PNG cost
    minutes of CPU. Instead pixels are reconstructed along anti-diagonals (x + y = d), which only depend on the
    previous diagonals: H + W vectorised steps for any mix of filters.
    """
    h, stride = rows.shape[0], rows.shape[1] - 1
    ftype = rows[:, 0]
    if ftype.max(initial=0) > 4:
        raise PngError(f"invalid PNG filter type {int(ftype.max())}")
    if not np.isin(ftype, (1, 3, 4)).any():  # None and Up only: row by row, uint8 arithmetic wraps mod 256
        out = rows[:, 1:].copy()
        for y in np.flatnonzero(ftype == 2):
            out[y] += out[y - 1] if y > 0 else 0
        return out
    w = stride // bpp
    px = rows[:, 1:].reshape(h, w, bpp).astype(np.int16)
    out = np.zeros((h + 1, w + 1, bpp), np.int16)  # row 0 and column 0: the zero "outside" pixels
    for d in range(h + w - 1):
        ys = np.arange(max(0, d - w + 1), min(h, d + 1))
        xs = d - ys
        a, b, c = out[ys + 1, xs], out[ys, xs + 1], out[ys, xs]  # left, up, up-left
        f = ftype[ys][:, None]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.select([f == 1, f == 2, f == 3, f == 4], [a, b, (a + b) // 2, paeth], 0)
        out[ys + 1, xs + 1] = (px[ys, xs] + pred) & 0xFF
    return out[1:, 1:].reshape(h, stride).astype(np.uint8)

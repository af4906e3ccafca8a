"""Reading a user's photo into one array format: float32 [H, W, 3] RGB in 0..1, EXIF orientation applied.

Accepted: anything Pillow decodes (PNG, JPEG, WebP, TIFF, BMP, ...) in 8 or 16 bits, gray, gray+alpha, RGB, RGBA,
palette (with or without transparency), CMYK. Transparent pixels are composited over black, the background the
reference crop pads with. Nothing is unpickled; the decoder only sees bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from shared.protocol import MAX_IMAGE_SIDE, MAX_REQUEST_FRAME

from .errors import PhotoError

MIN_IMAGE_SIDE = 16  # below this no detector finds a face; say so instead of failing later


def _read_bytes(data: bytes | str | os.PathLike, name: str) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        path = Path(data)
        if not path.is_file():
            raise PhotoError(name, "an image file", str(path), "check the path; the file does not exist",
                             code="not_found")
        size = path.stat().st_size
        if size > MAX_REQUEST_FRAME:
            raise PhotoError(name, f"a file of at most {MAX_REQUEST_FRAME // 2**20} MiB", f"{size // 2**20} MiB",
                             f"save the photo as JPEG or PNG at most {MAX_IMAGE_SIDE} px on its longer side",
                             code="too_large")
        raw = path.read_bytes()
    if len(raw) > MAX_REQUEST_FRAME:
        raise PhotoError(name, f"at most {MAX_REQUEST_FRAME // 2**20} MiB of image data",
                         f"{len(raw) // 2**20} MiB", f"save the photo at most {MAX_IMAGE_SIDE} px on its longer side",
                         code="too_large")
    if not raw:
        raise PhotoError(name, "image bytes (PNG, JPEG, ...)", "an empty file", "pick the photo file again")
    return raw


def _to_float_rgb(image) -> np.ndarray:
    """A decoded PIL image of any mode -> float32 [H, W, 3] in 0..1 (alpha composited over black)."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV", "PA"):
        image = image.convert("RGBA" if mode == "PA" else "RGB")
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):  # 16-bit (or 32-bit) gray: keep the full precision
        a = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        g = np.clip(a / top, 0.0, 1.0).astype(np.float32)
        return np.repeat(g[..., None], 3, axis=-1)
    a = np.asarray(image, dtype=np.float32) / 255.0
    if mode == "L":
        return np.repeat(a[..., None], 3, axis=-1)
    if mode == "LA":
        return np.repeat((a[..., 0] * a[..., 1])[..., None], 3, axis=-1)
    if mode == "RGBA":
        return np.ascontiguousarray(a[..., :3] * a[..., 3:4])
    if mode == "RGB":
        return np.ascontiguousarray(a)
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def load_photo(data: bytes | str | os.PathLike, *, name: str = "image") -> np.ndarray:
    """Decode a photo: float32 [H, W, 3] RGB in 0..1, EXIF orientation honoured.

    data: encoded bytes or a path. name: how errors refer to the image (e.g. ``inputs.reference``).
    Raises PhotoError for a missing, empty, corrupt or non-image file and for images over the protocol's limits
    (``MAX_IMAGE_SIDE`` px per side) or under ``MIN_IMAGE_SIDE`` px.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    raw = _read_bytes(data, name)
    try:
        image: Image.Image = Image.open(io.BytesIO(raw))
        w, h = image.size  # read from the header: refuse huge images before decoding their pixels
        if max(w, h) > MAX_IMAGE_SIDE:
            raise PhotoError(name, f"an image at most {MAX_IMAGE_SIDE} px per side", f"{w}x{h} px",
                             f"downscale the photo to at most {MAX_IMAGE_SIDE} px on its longer side",
                             code="too_large")
        image.load()
        image = ImageOps.exif_transpose(image)
    except PhotoError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise PhotoError(name, "an image file (PNG, JPEG, WebP, TIFF, ...)", f"{len(raw)} bytes that do not decode "
                         f"({type(e).__name__}: {e})", "export the photo again as PNG or JPEG", code="invalid_image") \
            from e
    w, h = image.size
    if min(w, h) < MIN_IMAGE_SIDE:
        raise PhotoError(name, f"an image at least {MIN_IMAGE_SIDE} px per side", f"{w}x{h} px",
                         "use a larger photo in which the face spans at least 40 px", code="too_small")
    return _to_float_rgb(image)

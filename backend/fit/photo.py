"""Reading a user's photo into one array format: float32 [H, W, 3] RGB in 0..1, EXIF orientation applied.

Accepted: anything Pillow decodes (PNG, JPEG, WebP, TIFF, BMP, ...) in 8 or 16 bits, gray, gray+alpha, RGB, RGBA,
palette (with or without transparency), CMYK. Transparent pixels are composited over black, the background the
reference crop pads with. Nothing is unpickled; the decoder only sees bytes.

16-bit colour: Pillow decodes 16-bit RGB(A) PNG and TIFF at 8 bits, so those (told by the decoder's raw mode,
read from the header) are decoded again by OpenCV (``opencv-contrib-python``, which mediapipe installs; pinned in
pyproject.toml) at full precision, with the EXIF orientation Pillow read applied to the array.
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


# EXIF orientation -> the array operation that displays the stored pixels upright (as ImageOps.exif_transpose)
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, k=-1), 7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda a: np.rot90(a, k=1),
}


def _is_16bit_colour(image) -> bool:
    """Whether a (not yet loaded) PIL image stores 16-bit colour samples that Pillow would reduce to 8 bits."""
    rawmodes = [t.args[0] if isinstance(t.args, tuple) else t.args for t in getattr(image, "tile", None) or []]
    return image.mode in ("RGB", "RGBA") and any(isinstance(r, str) and ";16" in r for r in rawmodes)


def _decode_16bit_colour(raw: bytes, orientation: int, name: str) -> np.ndarray:
    """16-bit RGB(A) bytes -> float32 [H, W, 3] 0..1 at full precision (alpha over black), EXIF ``orientation``
    applied. Raises PhotoError when OpenCV is missing or cannot decode what Pillow could."""
    try:
        import cv2
    except ImportError as e:
        raise PhotoError(name, "OpenCV to read a 16-bit colour image", "no cv2 module",
                         "pip install 'joker-head[backend]' (or save the photo with 8 bits per channel)",
                         code="missing_model") from e
    a = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_UNCHANGED)  # BGR(A), no orientation applied
    if a is None or a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] not in (3, 4):
        raise PhotoError(name, "a 16-bit RGB or RGBA image", "data OpenCV does not decode as one",
                         "export the photo again as a 16-bit PNG or TIFF, or with 8 bits per channel",
                         code="invalid_image")
    f = a.astype(np.float32) / 65535.0
    rgb = f[..., 2::-1] * (f[..., 3:4] if a.shape[2] == 4 else 1.0)
    return np.ascontiguousarray(_ORIENT.get(orientation, lambda x: x)(rgb), dtype=np.float32)


def load_photo(data: bytes | str | os.PathLike, *, name: str = "image") -> np.ndarray:
    """Decode a photo: float32 [H, W, 3] RGB in 0..1, EXIF orientation honoured.

    data: encoded bytes or a path. name: how errors refer to the image (e.g. ``inputs.reference``).
    Raises PhotoError for a missing, empty, corrupt or non-image file and for images over the protocol's limits
    (``MAX_IMAGE_SIDE`` px per side) or under ``MIN_IMAGE_SIDE`` px.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    raw = _read_bytes(data, name)
    out: np.ndarray | None = None  # set when the 16-bit colour path decodes the pixels
    try:
        image: Image.Image = Image.open(io.BytesIO(raw))
        w, h = image.size  # read from the header: refuse huge images before decoding their pixels
        if max(w, h) > MAX_IMAGE_SIDE:
            raise PhotoError(name, f"an image at most {MAX_IMAGE_SIDE} px per side", f"{w}x{h} px",
                             f"downscale the photo to at most {MAX_IMAGE_SIDE} px on its longer side",
                             code="too_large")
        if _is_16bit_colour(image):
            out = _decode_16bit_colour(raw, image.getexif().get(0x0112, 1), name)
        else:
            image.load()
            image = ImageOps.exif_transpose(image)
    except PhotoError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise PhotoError(name, "an image file (PNG, JPEG, WebP, TIFF, ...)", f"{len(raw)} bytes that do not decode "
                         f"({type(e).__name__}: {e})", "export the photo again as PNG or JPEG", code="invalid_image") \
            from e
    h, w = out.shape[:2] if out is not None else image.size[::-1]
    if min(w, h) < MIN_IMAGE_SIDE:
        raise PhotoError(name, f"an image at least {MIN_IMAGE_SIDE} px per side", f"{w}x{h} px",
                         "use a larger photo in which the face spans at least 40 px", code="too_small")
    return out if out is not None else _to_float_rgb(image)

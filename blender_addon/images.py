"""numpy <-> Image datablocks: previews written into Images, the reference portrait read out as PNG."""

from __future__ import annotations

import bpy
import numpy as np

from .shared.exif import orientation, upright
from .shared.png import decode_png, encode_png
from .shared.protocol import MAX_IMAGE_SIDE

NORMAL_MAP_IMAGE = "Joker Normal Map"
PREVIEW_IMAGE = "Joker Preview"
PROGRESS_IMAGE = "Joker Progress"
ALIGNED_IMAGE = "Joker Aligned Crop"  # the reference as the prior sees it, with the fitted landmarks


def write_image(name: str, rgb: np.ndarray) -> bpy.types.Image:
    """Put uint8 [H, W, C] (C = 1, 3 or 4; row 0 at the top) into the Image ``name``, creating or resizing it."""
    h, w = rgb.shape[:2]
    image = bpy.data.images.get(name)
    if image is None or tuple(image.size) != (w, h):
        if image is not None:
            bpy.data.images.remove(image)
        image = bpy.data.images.new(name, w, h, alpha=False)
    rgba = np.ones((h, w, 4), dtype=np.float32)
    px = rgb.reshape(h, w, -1).astype(np.float32) / 255.0
    rgba[..., :3] = px[..., :3] if px.shape[-1] >= 3 else px[..., :1]
    image.pixels.foreach_set(rgba[::-1].ravel())  # Blender stores the bottom row first
    image.update()
    image.pack()  # keep it in the .blend: generated pixels are lost otherwise
    if image.preview is not None:
        image.preview.reload()
    return image


def write_png(name: str, data: bytes) -> bpy.types.Image:
    return write_image(name, decode_png(data))


def read_image(image: bpy.types.Image) -> np.ndarray:
    """uint8 [H, W, 4] pixels of an Image, row 0 at the top."""
    w, h = image.size
    if w == 0 or h == 0:
        raise ValueError(f"image '{image.name}' has no pixels — is its file missing? (File > External Data)")
    px = np.empty(w * h * 4, dtype=np.float32)
    image.pixels.foreach_get(px)
    return np.clip(np.round(px.reshape(h, w, 4)[::-1] * 255.0), 0, 255).astype(np.uint8)


def image_to_png(image: bpy.types.Image, max_side: int = 2048) -> bytes:
    """An RGB PNG of the image, downscaled to at most ``max_side`` (and the protocol's limit) a side, turned upright
    by its file's EXIF orientation (Blender ignores the tag; the backend's decoder honours it, so a phone photo's
    Preview and its Match Portrait see the same upright face)."""
    max_side = min(max_side, MAX_IMAGE_SIDE)
    w, h = image.size
    if max(w, h) > max_side:
        copy = image.copy()
        try:
            s = max_side / max(w, h)
            copy.scale(max(1, round(w * s)), max(1, round(h * s)))
            px = read_image(copy)
        finally:
            bpy.data.images.remove(copy)
    else:
        px = read_image(image)
    source = file_bytes(image)
    if source is not None:
        px = upright(px, orientation(source))
    return encode_png(np.ascontiguousarray(px[..., :3]))


def file_bytes(image: bpy.types.Image) -> bytes | None:
    """The image's file as stored (packed, else on disk) when its pixels are the file's; None for edited images
    and missing files."""
    if image.is_dirty:  # painted on in Blender: the pixels are newer than any file
        return None
    if image.packed_file is not None:
        return bytes(image.packed_file.data)
    if image.source == "FILE":
        try:
            with open(bpy.path.abspath(image.filepath), "rb") as f:
                return f.read()
        except OSError:
            return None  # moved or unsaved: what Blender shows is all there is
    return None


def photo_bytes(image: bpy.types.Image) -> bytes:
    """The photo file as stored (EXIF orientation and bit depth kept for the backend's decoder), else the pixels
    as PNG (generated or edited images, or files past the protocol's side limit, downscaled)."""
    data = file_bytes(image) if max(image.size) <= MAX_IMAGE_SIDE else None
    return data if data is not None else image_to_png(image)

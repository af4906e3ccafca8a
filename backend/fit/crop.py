"""The reference crop: frame a portrait exactly as the official prior's training images were framed.

The geometry (5 landmarks -> POS scale and translation -> the 1024² / 700² window -> an affine into the 512² crop)
is ``shared.framing``'s, which the add-on and the view framing share; this module resamples the pixels as the
reference does: the whole image resized by 300/s_pos with bicubic filtering, the centre 700² of the 1024² window
(black outside the image), Lanczos to 512².

We compute the same pixels; only when the resized copy would be huge (a small face in a large photo: tens of
thousands of pixels wide) do we resize just the window the 700² crop needs, with Pillow's ``resize(box=...)``: the
identical filter at the identical sample positions, up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.framing import CROP_CENTRE, CROP_RES, STANDARD_LM5, FramingError, crop_geometry

from .errors import FitError

__all__ = ["CROP_RES", "STANDARD_LM5", "Crop", "centre_crop", "reference_crop", "to_uint8"]


@dataclass
class Crop:
    """An aligned 512² crop of a photo.

    image:    uint8 [512, 512, 3] RGB.
    to_crop:  float64 [2, 3] affine, image px -> crop px (both: top-left pixel corner origin, centres at +0.5).
    scale:    crop px per image px (mean of the two axes).
    centre:   float64 [2] the image point (px) at the crop's centre (256, 256).
    method:   "reference" or "centre".
    s_pos, t_pos: the POS scale and translation (reference frame: pixel indices, y flipped); NaN for a centre crop.
    landmarks5: float64 [5, 2] image px: the 5 points the crop is aligned on (NaN for a centre crop).
    aligned_on: where those 5 points came from ("mtcnn, steadied", "mtcnn", "face mesh, mirror-averaged", or what the
                caller said); "" for a centre crop.
    """

    image: np.ndarray
    to_crop: np.ndarray
    scale: float
    centre: np.ndarray
    method: str = "reference"
    s_pos: float = float("nan")
    t_pos: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))
    landmarks5: np.ndarray = field(default_factory=lambda: np.full((5, 2), np.nan))
    aligned_on: str = ""

    def points_to_crop(self, points: np.ndarray) -> np.ndarray:
        """float64 [..., 2] image px -> crop px."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.to_crop[:, :2].T + self.to_crop[:, 2]

    def points_to_image(self, points: np.ndarray) -> np.ndarray:
        """float64 [..., 2] crop px -> image px."""
        A = self.to_crop[:, :2]
        return (np.asarray(points, dtype=np.float64) - self.to_crop[:, 2]) @ np.linalg.inv(A).T


FULL_RESIZE_MAX_PX = 24_000_000  # up to this many resized pixels, resize the whole image as the reference does


def _window(image_u8: np.ndarray, size: tuple[int, int], x0: int, y0: int, n: int, resample: int,
            exact: bool = True) -> np.ndarray:
    """Pixels [y0, y0+n) x [x0, x0+n) of ``image_u8`` resized to ``size`` (w, h), black outside: uint8 [n, n, 3].

    Resizes the whole image like the reference (bit-exact) unless that would exceed ``FULL_RESIZE_MAX_PX``; then
    only the window, with Pillow's ``box``: the same filter at the same sample positions up to float rounding
    (at most a few levels on well under 1 % of the pixels, tests/test_fit_crop.py).
    """
    from PIL import Image

    h0, w0 = image_u8.shape[:2]
    w, h = size
    out = np.zeros((n, n, 3), dtype=np.uint8)
    a, b = max(x0, 0), min(x0 + n, w)
    c, d = max(y0, 0), min(y0 + n, h)
    if a >= b or c >= d:
        return out
    if exact and w * h <= FULL_RESIZE_MAX_PX:
        part = Image.fromarray(image_u8).resize((w, h), resample=resample).crop((a, c, b, d))
    else:
        box = (a * w0 / w, c * h0 / h, b * w0 / w, d * h0 / h)  # the sample positions of resizing everything
        part = Image.fromarray(image_u8).resize((b - a, d - c), resample=resample, box=box)
    out[c - y0:d - y0, a - x0:b - x0] = np.asarray(part)
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [H, W, 3] in 0..1 (or uint8) -> uint8 [H, W, 3], as the reference feeds Pillow."""
    a = np.asarray(image)
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a[..., :3])
    return np.clip(np.round(a[..., :3].astype(np.float32) * 255.0), 0, 255).astype(np.uint8)


def reference_crop(image: np.ndarray, landmarks5: np.ndarray, exact: bool = True, *, name: str = "landmarks5",
                   aligned_on: str = "landmarks5") -> Crop:
    """The reference implementation's 512² crop around the face given by 5 landmarks.

    image:      float [H, W, 3] RGB 0..1 (or uint8).
    landmarks5: float [5, 2] image px (corner origin, pixel centres at +0.5): left eye, right eye, nose tip,
                left mouth corner, right mouth corner (left = image left).
    exact:      False resamples only the needed window even for small photos (a few levels off on <1 % of the
                pixels, several times faster): for intermediate crops that only feed a landmark model.
    name:       the image as the caller knows it (e.g. ``inputs.reference``): the field errors name.
    aligned_on: where ``landmarks5`` came from, recorded in the crop.
    Raises FitError (field ``name``) for landmarks that frame no face.
    """
    from PIL import Image

    img = to_uint8(image)
    H, W = img.shape[:2]
    try:
        to_crop, size, x0, y0, s_pos, t = crop_geometry(landmarks5, W, H, name)
    except FramingError as e:  # the fit library's callers catch FitError
        raise FitError(e.field, e.expected, e.received, e.hint, code=e.code) from None
    mid = _window(img, size, x0, y0, CROP_CENTRE, Image.Resampling.BICUBIC, exact)
    out = np.asarray(Image.fromarray(mid).resize((CROP_RES, CROP_RES), resample=Image.Resampling.LANCZOS))
    crop = Crop(out, to_crop, float((to_crop[0, 0] + to_crop[1, 1]) / 2), np.zeros(2), "reference", s_pos, t,
                np.asarray(landmarks5, dtype=np.float64).reshape(5, 2).copy(), aligned_on)
    crop.centre = crop.points_to_image(np.array([CROP_RES / 2, CROP_RES / 2]))
    return crop


def centre_crop(image: np.ndarray, size: int = CROP_RES) -> Crop:
    """The largest centred square, Lanczos-resized to ``size``² (the old behaviour, only on request)."""
    from PIL import Image

    img = to_uint8(image)
    H, W = img.shape[:2]
    n = min(W, H)
    x0, y0 = (W - n) // 2, (H - n) // 2
    out = np.asarray(Image.fromarray(img[y0:y0 + n, x0:x0 + n]).resize((size, size), resample=Image.Resampling.LANCZOS))
    k = size / n
    return Crop(out, np.array([[k, 0.0, -k * x0], [0.0, k, -k * y0]]), float(k),
                np.array([x0 + n / 2, y0 + n / 2], dtype=np.float64), "centre")

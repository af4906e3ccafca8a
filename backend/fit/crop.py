"""The reference crop: frame a portrait exactly as the official prior's training images were framed.

The reference (Joker's ``crop_img`` over Deep3DFaceRecon's ``align_img``; facts in docs/FIT.md) does, for 5
landmarks ``lm`` (left eye, right eye, nose tip, left and right mouth corner; pixel-index coordinates):

    1. flip y:  lm_y' = H - 1 - lm_y
    2. POS:     least squares  lm' ≈ [r1; r2] X + t  over the 5 standard 3D landmarks X; s_pos = (|r1| + |r2|) / 2
    3. s = 300 / s_pos; resize the whole image to (int(W s), int(H s)) with bicubic filtering
    4. crop 1024² at  left = int(w/2 - 512 + (t_x - W/2) s),  up = int(h/2 - 512 + (H/2 - t_y) s)   (black outside)
    5. crop the centre 700² (offset 162), Lanczos-resize to 512²

We compute the same pixels; only when the resized copy would be huge (a small face in a large photo: tens of
thousands of pixels wide) do we resize just the window the 700² crop needs, with Pillow's ``resize(box=...)``: the
identical filter at the identical sample positions, up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.conventions import Camera

from .errors import FitError

CROP_RES = 512  # the prior's reference resolution
_TARGET, _RESCALE, _CENTRE = 1024, 300.0, 700  # Joker's crop: 1024² at scale 300/s_pos, centre 700², then 512²

# The 5 standard 3D landmarks of Deep3DFaceRecon (BFM/similarity_Lm3D_all.mat reduced by load_lm3d to left eye,
# right eye, nose tip, left mouth corner, right mouth corner; "left" = image left = the subject's right). Values as
# documented in microsoft/Deep3DFaceReconstruction (MIT), preprocess_img.py; see docs/FIT.md.
STANDARD_LM5 = np.array([[-0.31148657, 0.29036078, 0.13377953],
                         [0.30979887, 0.28972036, 0.13179526],
                         [0.0032535, -0.04617932, 0.55244243],
                         [-0.25216928, -0.38133916, 0.22405732],
                         [0.2484662, -0.38128236, 0.22235769]], dtype=np.float64)


@dataclass
class Crop:
    """An aligned 512² crop of a photo.

    image:    uint8 [512, 512, 3] RGB.
    to_crop:  float64 [2, 3] affine, image px -> crop px (both: top-left pixel corner origin, centres at +0.5).
    scale:    crop px per image px (mean of the two axes).
    centre:   float64 [2] the image point (px) at the crop's centre (256, 256).
    method:   "reference" or "centre".
    s_pos, t_pos: the POS scale and translation (reference frame: pixel indices, y flipped); NaN for a centre crop.
    """

    image: np.ndarray
    to_crop: np.ndarray
    scale: float
    centre: np.ndarray
    method: str = "reference"
    s_pos: float = float("nan")
    t_pos: np.ndarray = field(default_factory=lambda: np.full(2, np.nan))

    def points_to_crop(self, points: np.ndarray) -> np.ndarray:
        """float64 [..., 2] image px -> crop px."""
        p = np.asarray(points, dtype=np.float64)
        return p @ self.to_crop[:, :2].T + self.to_crop[:, 2]

    def points_to_image(self, points: np.ndarray) -> np.ndarray:
        """float64 [..., 2] crop px -> image px."""
        A = self.to_crop[:, :2]
        return (np.asarray(points, dtype=np.float64) - self.to_crop[:, 2]) @ np.linalg.inv(A).T


def pos(lm2d: np.ndarray, lm3d: np.ndarray = STANDARD_LM5) -> tuple[np.ndarray, float]:
    """Deep3DFaceRecon's POS: translation t float64 [2] and scale s of  lm2d ≈ [r1; r2] lm3d + t  (least squares).

    lm2d: [N, 2] image points (already in the reference's y-up frame); lm3d: [N, 3].
    """
    x = np.asarray(lm3d, dtype=np.float64)
    xp = np.asarray(lm2d, dtype=np.float64)
    n = len(x)
    A = np.zeros((2 * n, 8))
    A[0::2, 0:3], A[0::2, 3] = x, 1.0
    A[1::2, 4:7], A[1::2, 7] = x, 1.0
    k, *_ = np.linalg.lstsq(A, xp.reshape(-1), rcond=None)
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2.0
    return np.array([k[3], k[7]]), float(s)


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


def crop_geometry(landmarks5: np.ndarray, width: int, height: int) -> tuple[np.ndarray, tuple[int, int], int, int,
                                                                           float, np.ndarray]:
    """The reference crop's geometry for 5 landmarks (image px, corner origin) in a width x height image.

    Returns (to_crop float64 [2, 3] image px -> crop px, (w, h) the resized image size, x0, y0 the 700² window's
    corner in the resized image, s_pos, t_pos). Raises FitError for degenerate landmarks.
    """
    lm = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(lm).all():
        raise FitError("landmarks5", "5 finite (x, y) points", lm.tolist(), "detect the face again")
    ref = np.stack([lm[:, 0] - 0.5, (height - 1) - (lm[:, 1] - 0.5)], axis=1)  # the reference's index, y-up frame
    t, s_pos = pos(ref)
    if not s_pos > 1e-6:
        raise FitError("landmarks5", "5 landmarks spread over a face", lm.tolist(),
                       "the landmarks coincide; detect the face again")
    s = _RESCALE / s_pos
    w, h = int(width * s), int(height * s)
    if w < 1 or h < 1:
        raise FitError("landmarks5", "a face no larger than the image", f"a face {1 / s:.0f}x larger",
                       "detect the face again")
    left = int(w / 2 - _TARGET / 2 + (t[0] - width / 2) * s)
    up = int(h / 2 - _TARGET / 2 + (height / 2 - t[1]) * s)
    off = int(_TARGET / 2 - _CENTRE / 2)  # 162
    x0, y0 = left + off, up + off
    k = CROP_RES / _CENTRE
    sx, sy = w / width, h / height  # Pillow resamples each axis by its own integer size
    to_crop = np.array([[k * sx, 0.0, -k * x0], [0.0, k * sy, -k * y0]])
    return to_crop, (w, h), x0, y0, s_pos, t


def reference_crop(image: np.ndarray, landmarks5: np.ndarray, exact: bool = True) -> Crop:
    """The reference implementation's 512² crop around the face given by 5 landmarks.

    image:      float [H, W, 3] RGB 0..1 (or uint8).
    landmarks5: float [5, 2] image px (corner origin, pixel centres at +0.5): left eye, right eye, nose tip,
                left mouth corner, right mouth corner (left = image left).
    exact:      False resamples only the needed window even for small photos (a few levels off on <1 % of the
                pixels, several times faster): for intermediate crops that only feed a landmark model.
    """
    from PIL import Image

    img = to_uint8(image)
    H, W = img.shape[:2]
    to_crop, size, x0, y0, s_pos, t = crop_geometry(landmarks5, W, H)
    mid = _window(img, size, x0, y0, _CENTRE, Image.Resampling.BICUBIC, exact)
    out = np.asarray(Image.fromarray(mid).resize((CROP_RES, CROP_RES), resample=Image.Resampling.LANCZOS))
    crop = Crop(out, to_crop, float((to_crop[0, 0] + to_crop[1, 1]) / 2), np.zeros(2), "reference", s_pos, t)
    crop.centre = crop.points_to_image(np.array([CROP_RES / 2, CROP_RES / 2]))
    return crop


def five_from_68(points68: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's ``extract_5p``: [68, 2] iBUG points -> [5, 2] (eye centres as the mean of each eye's two
    corners, nose tip, mouth corners; image-left first for a frontal face)."""
    p = np.asarray(points68, dtype=np.float64)
    return np.stack([p[[36, 39]].mean(0), p[[42, 45]].mean(0), p[30], p[48], p[54]])


def reference_view_cameras(cameras: list[Camera], landmarks68: np.ndarray) -> list[Camera]:
    """Every view framed as the reference frames its distillation views: each camera re-cropped on the head's 68
    landmarks (float [68, 3] head frame, posed as rendered) projected into it. See :func:`view_camera`."""
    from shared.conventions import project_points

    return [view_camera(c, five_from_68(project_points(c, landmarks68)[0])) for c in cameras]


def view_camera(camera: Camera, landmarks5_px: np.ndarray) -> Camera:
    """The reference's per-view framing: ``camera`` (a 512² view) re-cropped on the face's projected 5 landmarks
    as the reference re-crops every distillation view (``align_camera_parameters``): same pose, intrinsics
    K' = A K with A the crop's affine. landmarks5_px: float [5, 2] in the view's px."""
    to_crop, *_ = crop_geometry(landmarks5_px, camera.width, camera.height)
    A = np.vstack([to_crop, [0.0, 0.0, 1.0]])
    return Camera(A @ camera.K, camera.c2w, CROP_RES, CROP_RES)


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

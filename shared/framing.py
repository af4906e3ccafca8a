"""The reference's face framing as pure geometry: 5 landmarks -> the crop window -> a per-view camera.

The official prior saw every image framed one way (Joker's ``crop_img`` over Deep3DFaceRecon's ``align_img``; facts
in docs/FIT.md): for 5 landmarks ``lm`` (left eye, right eye, nose tip, left and right mouth corner; pixel indices)

    1. flip y:  lm_y' = H - 1 - lm_y
    2. POS:     least squares  lm' ≈ [r1; r2] X + t  over the 5 standard 3D landmarks X; s_pos = (|r1| + |r2|) / 2
    3. s = 300 / s_pos; resize the whole image to (int(W s), int(H s))
    4. crop 1024² at  left = int(w/2 - 512 + (t_x - W/2) s),  up = int(h/2 - 512 + (H/2 - t_y) s)
    5. crop the centre 700² (offset 162), resize to 512²

This module owns that geometry (numpy only): the backend crops photos with it (``backend.fit.crop``) and frames the
distillation and preview views on the posed rig's landmarks (``backend.jobs.views``); the add-on frames its live
normal map with it, so the panel shows exactly the normal map the prior receives. Frames: image / view px have the
top-left pixel corner at (0, 0) and pixel centres at +0.5 (``shared.conventions``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .conventions import REFERENCE_RES, Camera, project_points
from .morphable import MorphableModel
from .spec import SpecError

CROP_RES = REFERENCE_RES  # the prior's reference resolution: every crop ends at 512²
CROP_TARGET, CROP_RESCALE, CROP_CENTRE = 1024, 300.0, 700  # Joker's crop: 1024² at 300/s_pos, centre 700², 512²

# The 5 standard 3D landmarks of Deep3DFaceRecon (BFM/similarity_Lm3D_all.mat reduced by load_lm3d to left eye,
# right eye, nose tip, left mouth corner, right mouth corner; "left" = image left = the subject's right). Values as
# documented in microsoft/Deep3DFaceReconstruction (MIT), preprocess_img.py; see docs/FIT.md.
STANDARD_LM5 = np.array([[-0.31148657, 0.29036078, 0.13377953],
                         [0.30979887, 0.28972036, 0.13179526],
                         [0.0032535, -0.04617932, 0.55244243],
                         [-0.25216928, -0.38133916, 0.22405732],
                         [0.2484662, -0.38128236, 0.22235769]], dtype=np.float64)


class FramingError(SpecError):
    """5 landmarks that frame no face (not finite, coincident, or a face larger than its image)."""

    def __init__(self, name: str, expected: str, received: Any, hint: str, code: str = "fit_failed"):
        super().__init__(name, expected, received, hint, code=code)


class CropWindow(NamedTuple):
    """The reference crop's geometry in an image (see the module docstring).

    to_crop: float64 [2, 3] affine, image px -> crop px.   size: (w, h) of the resized image.
    x0, y0:  the 700² window's top-left corner in the resized image.   s_pos, t_pos: POS scale and float64 [2]
    translation (the reference's frame: pixel indices, y up).
    """

    to_crop: np.ndarray
    size: tuple[int, int]
    x0: int
    y0: int
    s_pos: float
    t_pos: np.ndarray


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


def crop_geometry(landmarks5: np.ndarray, width: int, height: int, name: str = "landmarks5") -> CropWindow:
    """The reference crop's geometry for 5 landmarks (float [5, 2] image px) in a ``width`` x ``height`` image.

    Raises :class:`FramingError` (field ``name``: the caller's image or input) for degenerate landmarks.
    """
    lm = np.asarray(landmarks5, dtype=np.float64).reshape(5, 2)
    if not np.isfinite(lm).all():
        raise FramingError(name, "5 finite (x, y) landmarks", lm.tolist(), "detect the face again")
    ref = np.stack([lm[:, 0] - 0.5, (height - 1) - (lm[:, 1] - 0.5)], axis=1)  # the reference's index, y-up frame
    t, s_pos = pos(ref)
    if not s_pos > 1e-6:
        raise FramingError(name, "5 landmarks spread over a face", lm.tolist(),
                           "the landmarks coincide; detect the face again")
    s = CROP_RESCALE / s_pos
    w, h = int(width * s), int(height * s)
    if w < 1 or h < 1:
        raise FramingError(name, "a face no larger than the image", f"a face {1 / s:.0f}x larger",
                           "detect the face again")
    left = int(w / 2 - CROP_TARGET / 2 + (t[0] - width / 2) * s)
    up = int(h / 2 - CROP_TARGET / 2 + (height / 2 - t[1]) * s)
    off = int(CROP_TARGET / 2 - CROP_CENTRE / 2)  # 162
    x0, y0 = left + off, up + off
    k = CROP_RES / CROP_CENTRE
    sx, sy = w / width, h / height  # Pillow resamples each axis by its own integer size
    to_crop = np.array([[k * sx, 0.0, -k * x0], [0.0, k * sy, -k * y0]])
    return CropWindow(to_crop, (w, h), x0, y0, s_pos, t)


def five_from_68(points68: np.ndarray) -> np.ndarray:
    """Deep3DFaceRecon's ``extract_5p``: [68, 2] iBUG points -> [5, 2] (eye centres as the mean of each eye's two
    corners, nose tip, mouth corners; image-left first for a frontal face)."""
    p = np.asarray(points68, dtype=np.float64)
    return np.stack([p[[36, 39]].mean(0), p[[42, 45]].mean(0), p[30], p[48], p[54]])


def view_camera(camera: Camera, landmarks5_px: np.ndarray) -> Camera:
    """The reference's per-view framing: ``camera`` (a 512² view) re-cropped on the face's projected 5 landmarks
    as the reference re-crops every distillation view (``align_camera_parameters``): same pose, intrinsics
    K' = A K with A the crop's affine. landmarks5_px: float [5, 2] in the view's px."""
    to_crop = crop_geometry(landmarks5_px, camera.width, camera.height).to_crop
    A = np.vstack([to_crop, [0.0, 0.0, 1.0]])
    return Camera(A @ camera.K, camera.c2w, CROP_RES, CROP_RES)


def reference_view_cameras(cameras: list[Camera], landmarks68: np.ndarray) -> list[Camera]:
    """Every 512² view framed as the reference frames its distillation views: each camera re-cropped on the head's
    68 landmarks (float [68, 3] head frame, metres, posed as rendered) projected into it (:func:`view_camera`)."""
    return [view_camera(c, five_from_68(project_points(c, landmarks68)[0])) for c in cameras]


def frame_views(cameras: list[Camera], landmarks68: np.ndarray) -> list[Camera]:
    """:func:`reference_view_cameras` for square views of any resolution: the framing is computed at 512² (the
    crop's integer geometry is defined there) and scaled back to each camera's own size.

    cameras: square views; landmarks68: float [68, 3] the posed rig's 68 landmark vertices (head frame, metres).
    """
    at_512 = [c if c.width == CROP_RES else c.scaled(CROP_RES) for c in cameras]
    views = reference_view_cameras(at_512, landmarks68)
    return [v if v.width == c.width else v.scaled(c.width, c.height) for v, c in zip(views, cameras)]


def frame_rig_views(cameras: list[Camera], model: MorphableModel | None, vertices: np.ndarray
                    ) -> tuple[list[Camera], str]:
    """(cameras, framing): ``cameras`` framed on the posed rig's 68 landmarks (:func:`frame_views`, "reference"),
    or unchanged ("centred") when there is no model, the model has no ``landmarks68`` or ``vertices`` is not a mesh
    of the model.

    vertices: float [V, 3] the posed mesh (head frame, metres), exactly as its normal maps are rendered.
    """
    ids = None if model is None else model.arrays.get("landmarks68")
    if model is None or ids is None or len(vertices) != model.n_vertices:
        return list(cameras), "centred"
    landmarks68 = np.asarray(vertices, dtype=np.float64)[np.asarray(ids, dtype=np.int64)]  # [68, 3]
    return frame_views(cameras, landmarks68), "reference"

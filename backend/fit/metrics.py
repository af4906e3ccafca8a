"""Measures of the fit shared by the tests and bench/fit_bench.py (plain functions of arrays)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Sequence

import numpy as np

from shared.morphable import MorphableModel

from .crop import reference_crop
from .detect import detect_faces
from .landmarks import aligned_crop, mtcnn_points

CORNERS = np.array([[0.0, 0.0], [512.0, 0.0], [0.0, 512.0], [512.0, 512.0]])


class ShapeComparison(NamedTuple):
    """Two neutral faces compared on the rig's ``face`` region (see :func:`compare_shapes`).

    rigid_mm:   mean vertex distance after the best rotation + translation (the bench's ``shape_*_mm``);
    similar_mm: the same when a uniform scale is allowed too: the error in the face's *shape*, its size apart;
    size_ratio: that scale: how much larger the true face is than the fitted one (1.0 = the right size).
    """

    rigid_mm: float
    similar_mm: float
    size_ratio: float


def compare_shapes(rig: MorphableModel, identity: Optional[Sequence[float]],
                   identity_true: Sequence[float]) -> ShapeComparison:
    """Compare the neutral face of ``identity`` (None: the mean face) with the true one's, rigidly and up to size.

    Why both: one photo cannot tell a face from the same face scaled by k about the camera centre (k times larger,
    k times farther: the same image), so a fit's *size* only comes from how the model ties size to shape, and the
    rigid error counts every per cent of size as ~0.75 mm on ICT's face (its points lie 75 mm from their centroid on
    average). Umeyama's closed form, float64."""
    face = rig.region_mask("face")
    A = rig.shape(identity)[face].astype(np.float64)
    B = rig.shape(identity_true)[face].astype(np.float64)
    A0, B0 = A - A.mean(0), B - B.mean(0)
    U, sv, Vt = np.linalg.svd(A0.T @ B0)
    d = np.array([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ np.diag(d) @ Vt
    k = float((sv * d).sum() / (A0 ** 2).sum())
    rigid = float(np.linalg.norm(A0 @ R - B0, axis=1).mean() * 1000.0)
    similar = float(np.linalg.norm(k * A0 @ R - B0, axis=1).mean() * 1000.0)
    return ShapeComparison(rigid, similar, k)


def shape_error_mm(rig: MorphableModel, identity: Optional[Sequence[float]],
                   identity_true: Sequence[float]) -> float:
    """Mean vertex distance (mm) between two neutral faces (identity only, the rig's ``face`` region) after the
    rigid alignment (rotation + translation, no scale) that minimises it."""
    return compare_shapes(rig, identity, identity_true).rigid_mm


def transformed_copies(image: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, copy, A): A float64 [2, 3] maps the original's px to the copy's. Scaled by 0.6 and 1.7 (Lanczos),
    shifted onto a larger grey canvas (a half-body framing), padded with black bars."""
    from PIL import Image

    u8 = Image.fromarray(np.clip(np.round(image * 255), 0, 255).astype(np.uint8))
    H, W = image.shape[:2]
    out = []
    for k in (0.6, 1.7):
        w, h = round(W * k), round(H * k)
        out.append((f"scaled {k}x", np.asarray(u8.resize((w, h), Image.Resampling.LANCZOS)) / 255.0,
                    np.array([[w / W, 0, 0], [0, h / H, 0]])))
    canvas = np.full((H + 300, W + 420, 3), 0.5)
    canvas[210:210 + H, 35:35 + W] = image
    out.append(("shifted", canvas, np.array([[1.0, 0, 35], [0, 1.0, 210]])))
    out.append(("padded", np.pad(image, ((0, 140), (260, 0), (0, 0))), np.array([[1.0, 0, 260], [0, 1.0, 0]])))
    return out


class _Framed(NamedTuple):
    """One photo's crops, mapped into the original photo's px."""

    name: str
    corners: np.ndarray  # float64 [4, 2] the crop on the chosen points
    raw_corners: np.ndarray  # float64 [4, 2] the crop on MTCNN's raw points
    points: np.ndarray  # float64 [5, 2] the chosen 5 points
    scale: float  # crop px per original px


def _framed(image: np.ndarray, points: str) -> list[_Framed]:
    """The original, then each of :func:`transformed_copies`, cropped on ``points`` and on MTCNN's raw points."""
    out = []
    for name, copy, A in [("original", image, np.array([[1.0, 0, 0], [0, 1.0, 0]]))] + transformed_copies(image):
        face = detect_faces(copy)[0]
        if points == "mesh":
            crop = aligned_crop(copy, face, points="mesh")[0]
        else:  # the crop only: what the MTCNN options align on needs no mesh
            crop = reference_crop(copy, mtcnn_points(copy, face, steadied=points == "mtcnn")[0])
        raw = reference_crop(copy, face.landmarks5)
        back = np.linalg.inv(A[:, :2]).T
        out.append(_Framed(name, (crop.points_to_image(CORNERS) - A[:, 2]) @ back,
                           (raw.points_to_image(CORNERS) - A[:, 2]) @ back, (crop.landmarks5 - A[:, 2]) @ back,
                           crop.scale / A[0, 0]))
    return out


@dataclass
class CropStability:
    """Crop px at 512², for crops aligned on one choice of 5 points (see ``aligned_crop``).

    moved:        per transformed copy, the largest distance between its crop's corners and the original's, both
                  mapped into the original photo (the bench's ``crop_px`` is the largest);
    point_jitter: float64 [5] per point (eye, eye, nose, mouth, mouth), the largest distance between a copy's point
                  and the original's, mapped likewise;
    framing:      per photo (the original and each copy), the largest corner distance between the crop and the crop
                  on MTCNN's raw points of the same photo (what the reference would have made of that photo);
    to_mean_raw:  the original's crop against the mean of the raw-MTCNN crops of all the photos (the reference's
                  framing with its jitter averaged out);
    raw_spread:   how far the raw-MTCNN crops themselves lie from that mean (the reference's own jitter).
    """

    moved: dict[str, float]
    point_jitter: np.ndarray
    framing: dict[str, float]
    to_mean_raw: float
    raw_spread: float


def crop_stability(image: np.ndarray, points: str = "mtcnn") -> CropStability:
    """How steady the crop on ``points`` is under scaled, shifted and padded copies of ``image`` and how far it
    frames the face from MTCNN's raw points (:class:`CropStability`)."""
    rows = _framed(image, points)
    base = rows[0]
    k = base.scale
    mean_raw = np.mean([r.raw_corners for r in rows], axis=0)
    return CropStability({r.name: float(np.abs(r.corners - base.corners).max() * k) for r in rows[1:]},
                         np.max([np.linalg.norm(r.points - base.points, axis=1) * k for r in rows[1:]], axis=0),
                         {r.name: float(np.abs(r.corners - r.raw_corners).max() * k) for r in rows},
                         float(np.abs(base.corners - mean_raw).max() * k),
                         float(max(np.abs(r.raw_corners - mean_raw).max() for r in rows) * k))


def crop_corner_disagreement(image: np.ndarray, points: str = "mtcnn") -> dict[str, float]:
    """Per transformed copy: the largest distance (crop px at 512²) between its crop's corners and the original's,
    both mapped into the original photo and measured at the crop's scale. Crops as fit_portrait makes them
    (``points``: see ``aligned_crop``)."""
    return crop_stability(image, points).moved

"""Measures of the fit shared by the tests and bench/fit_bench.py (plain functions of arrays)."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from shared.morphable import MorphableModel

from .detect import detect_faces
from .landmarks import aligned_crop

CORNERS = np.array([[0.0, 0.0], [512.0, 0.0], [0.0, 512.0], [512.0, 512.0]])


def shape_error_mm(rig: MorphableModel, identity: Optional[Sequence[float]],
                   identity_true: Sequence[float]) -> float:
    """Mean vertex distance (mm) between two neutral faces (identity only, the rig's ``face`` region) after the
    rigid alignment (rotation + translation, no scale) that minimises it."""
    face = rig.region_mask("face")
    A = rig.shape(identity)[face].astype(np.float64)
    B = rig.shape(identity_true)[face].astype(np.float64)
    A0, B0 = A - A.mean(0), B - B.mean(0)
    U, _, Vt = np.linalg.svd(A0.T @ B0)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return float(np.linalg.norm(A0 @ (U @ D @ Vt) - B0, axis=1).mean() * 1000.0)


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


def crop_corner_disagreement(image: np.ndarray) -> dict[str, float]:
    """Per transformed copy: the largest distance (crop px at 512²) between its crop's corners and the original's,
    both mapped into the original photo and measured at the crop's scale. Crops as fit_portrait makes them."""
    base, _ = aligned_crop(image, detect_faces(image)[0])
    ref = base.points_to_image(CORNERS)
    out = {}
    for name, copy, A in transformed_copies(image):
        crop, _ = aligned_crop(copy, detect_faces(copy)[0])
        in_orig = (crop.points_to_image(CORNERS) - A[:, 2]) @ np.linalg.inv(A[:, :2]).T
        out[name] = float(np.abs(in_orig - ref).max() * base.scale)
    return out

"""Faces and their 5 landmarks in a photo (MTCNN, see :mod:`backend.fit.mtcnn`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crop import to_uint8


@dataclass
class Face:
    """One detected face.

    box:        float64 [4] (x0, y0, x1, y1) image px (top-left pixel corner origin, centres at +0.5).
    score:      detector confidence in 0..1.
    landmarks5: float64 [5, 2] image px: left eye, right eye, nose tip, left mouth corner, right mouth corner,
                where "left" is *image* left (the subject's right eye for a frontal face) - MTCNN's order.
    """

    box: np.ndarray
    score: float
    landmarks5: np.ndarray

    @property
    def size(self) -> float:
        """The box's longer side in px."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    @property
    def eye_distance(self) -> float:
        """Distance between the eye landmarks in px (the face's scale, robust to loose boxes)."""
        return float(np.linalg.norm(self.landmarks5[1] - self.landmarks5[0]))


def steady_landmarks(image: np.ndarray, face: Face) -> np.ndarray:
    """MTCNN's 5 landmarks of ``face`` steadied by re-running the O-Net on jittered boxes (see
    :func:`backend.fit.mtcnn.steady_landmarks`): float64 [5, 2] image px, ``Face.landmarks5``'s order and
    convention. Between scaled, shifted and padded copies of a photo they move the reference crop by ~1-3 px at
    512² where ``face.landmarks5`` moves it by 5-18 px (docs/FIT.md). image: float [H, W, 3] RGB 0..1 or uint8."""
    from . import mtcnn

    box = face.box + np.array([1.0, 1.0, 0.0, 0.0])  # back to MTCNN's pixel-index box
    return mtcnn.steady_landmarks(to_uint8(image), box) + 0.5


def detect_faces(image: np.ndarray) -> list[Face]:
    """Every face in ``image`` (float [H, W, 3] RGB 0..1 or uint8), largest first; [] when there is none."""
    from . import mtcnn

    boxes, lms = mtcnn.detect(to_uint8(image))
    # MTCNN's coordinates are pixel indices (centres at integers); ours put centres at +0.5.
    faces = [Face(np.array([b[0] - 1.0, b[1] - 1.0, b[2], b[3]]), float(b[4]), lm + 0.5) for b, lm in zip(boxes, lms)]
    return sorted(faces, key=lambda f: -f.size)

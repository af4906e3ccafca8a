"""Dense landmarks: MediaPipe's 468-point face mesh, reduced to the 68 iBUG / Multi-PIE points.

The mesh runs on the detected face's reference crop (large, centred and upright enough), then the points are
mapped back to the photo. The 68 iBUG points are the mesh
points listed in ``MESH_TO_IBUG68`` (the mean where two are listed; the correspondence table of
PeizhiYan/Mediapipe_2_Dlib_Landmarks, see docs/FIT.md). iBUG order: 0-16 jaw line (image left to right), 17-26
brows, 27-35 nose, 36-47 eyes, 48-67 mouth.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .crop import Crop, reference_crop
from .detect import Face, steady_landmarks
from .errors import FitError

# mediapipe==0.10.21: mediapipe/modules/face_landmark/face_landmark.tflite (the model the solution graph runs)
MESH_MODEL_SHA256 = "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"

MESH_TO_IBUG68: tuple[tuple[int, ...], ...] = (
    (127,), (234,), (93,), (132, 58), (58, 172), (136,), (150,), (176,), (152,), (400,), (379,), (365,),
    (397, 288), (361,), (323,), (454,), (356,),  # jaw 0-16
    (70,), (63,), (105,), (66,), (107,), (336,), (296,), (334,), (293,), (300,),  # brows 17-26
    (168, 6), (197, 195), (5,), (4,), (75,), (97,), (2,), (326,), (305,),  # nose 27-35
    (33,), (160,), (158,), (133,), (153,), (144,), (362,), (385,), (387,), (263,), (373,), (380,),  # eyes
    (61,), (39,), (37,), (0,), (267,), (269,), (291,), (321,), (314,), (17,), (84,), (91,),  # outer lips
    (78,), (82,), (13,), (312,), (308,), (317,), (14,), (87,),  # inner lips 60-67
)
JAW = slice(0, 17)
# The mesh's face-oval points: like the iBUG jaw line they ride the silhouette, so the fit trusts them less.
MESH_OVAL = (10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284, 288,
             297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)

# MediaPipe's eye contours (16 points each), image-left eye first: their means are the eyes' centres, steadier than
# any single point (the crop's scale rests on the eye distance).
EYE_CONTOURS = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))
NOSE_TIP, MOUTH_CORNERS = 4, (61, 291)  # iBUG 30, 48 and 54 in MESH_TO_IBUG68
REFINE_PASSES = 2  # re-crops on the mesh's points for aligned_crop(points="mesh")

_lock = threading.Lock()  # the mediapipe graph is not re-entrant
_MESH: dict[str, Any] = {}


def _mesh_model_path() -> Path:
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise FitError("landmark model", "the mediapipe package (face mesh)", "not installed",
                       "pip install 'joker-head[backend]' (mediapipe==0.10.21 on x86-64; see docs/FIT.md)",
                       code="missing_model")
    return Path(list(spec.submodule_search_locations)[0]) / "modules" / "face_landmark" / "face_landmark.tflite"


def _mesh():
    if "fm" not in _MESH:
        path = _mesh_model_path()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if digest != MESH_MODEL_SHA256:
            raise FitError("landmark model", f"face_landmark.tflite with sha256 {MESH_MODEL_SHA256[:12]}...",
                           f"sha256 {digest[:12]}...", "reinstall the pinned version: pip install 'mediapipe==0.10.21'",
                           code="bad_model")
        import mediapipe as mp

        _MESH["fm"] = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                      refine_landmarks=False, min_detection_confidence=0.3)
    return _MESH["fm"]


def mesh_points(crop_u8: np.ndarray) -> np.ndarray | None:
    """MediaPipe's 468 points float64 [468, 2] in px of ``crop_u8`` (uint8 [N, N, 3]), or None without a face."""
    with _lock:
        result = _mesh().process(np.ascontiguousarray(crop_u8))
    if not result.multi_face_landmarks:
        return None
    n = crop_u8.shape[0]
    pts = np.array([[p.x, p.y] for p in result.multi_face_landmarks[0].landmark], dtype=np.float64)
    return pts * np.array([crop_u8.shape[1], n])  # normalised to the image: x * W, y * H (corner origin)


def ibug68_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """float64 [68, 2] iBUG points from mesh points [468, 2]."""
    return np.stack([mesh[list(idx)].mean(axis=0) for idx in MESH_TO_IBUG68])


def five_from_mesh(mesh: np.ndarray) -> np.ndarray:
    """float64 [5, 2] crop landmarks in MTCNN's order (eye, eye, nose tip, mouth corner, mouth corner; image left
    first) from mesh points [468, 2]: Deep3DFaceRecon's rule for 68-point input (``extract_5p``: nose tip, mouth
    corners, eye centres), with each eye centre the mean of its 16 contour points instead of its two corners."""
    return np.stack([mesh[list(EYE_CONTOURS[0])].mean(0), mesh[list(EYE_CONTOURS[1])].mean(0), mesh[NOSE_TIP],
                     mesh[MOUTH_CORNERS[0]], mesh[MOUTH_CORNERS[1]]])


ALIGN_POINTS = ("mtcnn", "mtcnn raw", "mesh")  # aligned_crop's choices of the 5 points; "mtcnn" is shipped
# Steadied points farther than this fraction of the face box's side from the cascade's own points: the O-Net drifted
# off the face (seen: at most 0.045 on real photos, their copies and rendered heads turned up to 35 degrees).
STEADY_MAX_MOVE = 0.15


def aligned_crop(image: np.ndarray, face: Face, points: str = "mtcnn", name: str = "image",
                 passes: int = REFINE_PASSES) -> tuple[Crop, np.ndarray]:
    """The reference crop of ``face`` and MediaPipe's 468 points in it (float64 [468, 2] crop px).

    points: which 5 points the crop is aligned on (recorded in ``Crop.landmarks5``, image px, and
    ``Crop.aligned_on``):
      "mtcnn"      MTCNN's, steadied (:func:`backend.fit.detect.steady_landmarks`): the reference's recipe on the
                   reference's detector, stable to ~2 px between scaled / shifted copies (aligned_on "mtcnn, steadied";
                   the raw points, aligned_on "mtcnn", if the steadied ones moved over ``STEADY_MAX_MOVE`` of the box);
      "mtcnn raw"  the cascade's own points (``face.landmarks5``), as the reference takes them: 5-18 px of jitter;
      "mesh"       5 points from MediaPipe's mesh (:func:`five_from_mesh`, mirror-averaged), cropping again
                   ``passes`` times: steady on large faces, not on small or turned ones (docs/FIT.md).
    ``name``: the image as the caller knows it (e.g. ``inputs.reference``); errors name it.
    Raises FitError when the mesh finds no face.
    """
    if points in ("mtcnn", "mtcnn raw"):
        five, source = mtcnn_points(image, face, steadied=points == "mtcnn")
        crop = reference_crop(image, five, name=name, aligned_on=source)
    elif points == "mesh":
        crop = reference_crop(image, face.landmarks5, exact=passes == 0, name=name, aligned_on="mtcnn")
        for i in range(passes):
            five, source = _steady_five(crop.image, name)
            crop = reference_crop(image, crop.points_to_image(five), exact=i == passes - 1, name=name,
                                  aligned_on=source)
    else:
        raise ValueError(f"aligned_crop: points must be one of {ALIGN_POINTS}, got {points!r}")
    return crop, _mesh_or_fail(crop.image, name)


def mtcnn_points(image: np.ndarray, face: Face, steadied: bool = True) -> tuple[np.ndarray, str]:
    """The 5 MTCNN points the reference crop is aligned on (float64 [5, 2] image px) and their source: steadied
    (:func:`backend.fit.detect.steady_landmarks`), or the cascade's own when ``steadied`` is off or the steadying
    moved a point over ``STEADY_MAX_MOVE`` of the face box (it lost the face)."""
    if steadied:
        five = steady_landmarks(image, face)
        if np.linalg.norm(five - face.landmarks5, axis=1).max() <= STEADY_MAX_MOVE * face.size:
            return five, "mtcnn, steadied"
    return face.landmarks5, "mtcnn"


def _steady_five(crop_u8: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    """(float64 [5, 2] crop px, source): :func:`five_from_mesh` averaged over the crop and its mirror image (the
    mirror's points flipped back, its eyes and mouth corners swapped), which halves the mesh's left-right jitter;
    the crop's own points alone where the mirror finds no face."""
    a = five_from_mesh(_mesh_or_fail(crop_u8, name))
    m = mesh_points(np.ascontiguousarray(crop_u8[:, ::-1]))
    if m is None:
        return a, "face mesh"
    b = five_from_mesh(m)[[1, 0, 2, 4, 3]]
    b[:, 0] = crop_u8.shape[1] - b[:, 0]
    return (a + b) / 2.0, "face mesh, mirror-averaged"


def _mesh_or_fail(crop_u8: np.ndarray, name: str) -> np.ndarray:
    mesh = mesh_points(crop_u8)
    if mesh is None:
        raise FitError(name, "a face the landmark model can read", "no landmarks in the face's crop",
                       "use a sharper, better lit photo with the face turned less than 60 degrees",
                       code="no_landmarks")
    return mesh


def detect_mesh(image: np.ndarray, face: Face) -> np.ndarray:
    """MediaPipe's 468 face-mesh points float64 [468, 2] in image px (corner origin) of ``face`` in ``image``.

    The mesh runs on the face's aligned reference crop (:func:`aligned_crop`). Raises FitError without a face.
    """
    crop, mesh = aligned_crop(image, face)
    return crop.points_to_image(mesh)


def detect_landmarks(image: np.ndarray, face: Face) -> np.ndarray:
    """68 iBUG landmarks float64 [68, 2] in image px (corner origin) of ``face`` in ``image`` (float [H, W, 3]).

    Raises FitError when the mesh finds no face in the window around ``face``.
    """
    return ibug68_from_mesh(detect_mesh(image, face))

"""From a portrait to an aligned crop and a fitted rig: detect, crop, landmarks, fit (one call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.jobs import RigState
from shared.morphable import MorphableModel

from .correspondence import load_mesh_points
from .crop import Crop
from .detect import Face, detect_faces
from .errors import FitError
from .landmarks import MESH_OVAL, MESH_TO_IBUG68, aligned_crop, ibug68_from_mesh
from .response import load_response
from .rigfit import GOOD_PX, JAW_WEIGHT, LAMBDA_ID_MESH, ROUGH_PX, RigFit, fit_rig, project_fit

MIN_EYE_DISTANCE_PX = 12.0  # below this MTCNN's landmarks are too coarse for the crop or the fit (a ~40 px face)


@dataclass
class PortraitFit:
    """Everything the fit found.

    crop:      the reference crop (uint8 [512, 512, 3] and its affine from the photo).
    face:      the face used (photo px).
    landmarks: float64 [68, 2] iBUG landmarks in crop px.
    fit:       the fitted rig; its residual_px are the 68 iBUG landmarks' (crop px).
    warnings:  other faces, profile views, a rough fit.
    mesh:      float64 [468, 2] MediaPipe's mesh points in crop px (what a dense fit used).
    dense:     whether the fit used the 468 mesh points (the rig has a correspondence table) or the 68.
    """

    crop: Crop
    face: Face
    landmarks: np.ndarray
    fit: RigFit
    warnings: list[str] = field(default_factory=list)
    mesh: np.ndarray | None = None
    dense: bool = False


def _choose_face(faces: list[Face], name: str) -> tuple[Face, list[str]]:
    if not faces:
        raise FitError(name, "a photo with a face", "no face found",
                       "use a photo where the face is visible, lit, at least 40 px tall and turned less than about "
                       "60 degrees from the camera", code="no_face")
    face, others = faces[0], faces[1:]
    warnings = []
    if others:
        where = ", ".join(f"at ({(f.box[0] + f.box[2]) / 2:.0f}, {(f.box[1] + f.box[3]) / 2:.0f}) px, "
                          f"{f.size:.0f} px" for f in others[:5])
        warnings.append(f"{len(others)} other face(s) ignored ({where}); the largest, {face.size:.0f} px, is used")
    if face.eye_distance < MIN_EYE_DISTANCE_PX:
        raise FitError(name, f"a face with eyes at least {MIN_EYE_DISTANCE_PX:.0f} px apart",
                       f"{face.eye_distance:.1f} px ({face.size:.0f} px face)",
                       "use a larger photo or crop closer to the face", code="face_too_small")
    return face, warnings


def fit_portrait(image: np.ndarray, rig: MorphableModel, *, fit_identity: bool = True, fit_expression: bool = True,
                 fit_pose: bool = True, init: RigState | None = None, name: str = "image") -> PortraitFit:
    """Detect the largest face in ``image`` (float [H, W, 3] RGB 0..1), crop it as the reference does (on MTCNN's 5
    points, steadied: :func:`backend.fit.landmarks.aligned_crop`), find its landmarks and fit ``rig`` to them.
    Raises FitError (no face, face too small, fit failed); other faces and extreme profiles become warnings.
    Parts not fitted keep their values from ``init`` (e.g. *Match Expression*: ``fit_identity=False,
    init=<the rig's current state>`` keeps the artist's identity)."""
    face, warnings = _choose_face(detect_faces(image), name)
    crop, mesh = aligned_crop(image, face, name=name)
    landmarks = ibug68_from_mesh(mesh)
    fit = fit_landmarks(rig, mesh, fit_identity=fit_identity, fit_expression=fit_expression, fit_pose=fit_pose,
                        init=init)
    dense = load_mesh_points(rig) is not None
    med = float(np.median(fit.residual_px))
    if fit.verdict == "failed":
        raise FitError(name, "landmarks the rig can follow", f"a median landmark error of {med:.1f} px",
                       "use a clearer, more frontal photo of one face", code="fit_failed")
    if fit.verdict == "rough":
        warnings.append(f"rough fit: median landmark error {med:.1f} px at 512²")
    return PortraitFit(crop, face, landmarks, fit, warnings + fit.warnings, mesh, dense)


def fit_landmarks(rig: MorphableModel, mesh: np.ndarray, *, calibrated: bool = False, **flags: Any) -> RigFit:
    """Fit ``rig`` to MediaPipe's 468 points float [468, 2] (crop px): densely when the rig has a correspondence
    table (:mod:`backend.fit.correspondence`, identity prior ``LAMBDA_ID_MESH``), else on the 68 iBUG landmarks.
    Either way the returned residual and verdict are the 68 iBUG landmarks' (the rig's own surface points that
    correspond to them).

    ``calibrated`` (opt-in) also fits the shipped response model (:mod:`backend.fit.response`): how MediaPipe's
    points follow identity on rendered heads. It recovers identity better on renders but moves the rig off real
    photos' landmarks (4-5 px instead of ~2, docs/FIT.md), so it is not the default."""
    ibug = ibug68_from_mesh(mesh)
    table = load_mesh_points(rig)
    if table is None:
        return fit_rig(rig, ibug, **flags)
    weights = np.ones(len(mesh))
    weights[list(MESH_OVAL)] = JAW_WEIGHT
    response = load_response(rig) if calibrated else None
    fit = fit_rig(rig, mesh, points=table, weights=weights, response=response, lambda_id=LAMBDA_ID_MESH, **flags)
    residual = np.linalg.norm(project_fit(rig, fit, table.combine(MESH_TO_IBUG68)) - ibug, axis=1)
    med = float(np.median(residual))
    fit.residual_px = residual
    fit.verdict = "good" if med < GOOD_PX else "rough" if med < ROUGH_PX else "failed"
    return fit

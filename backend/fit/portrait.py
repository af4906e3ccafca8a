"""From a portrait to an aligned crop and a fitted rig: detect, crop, landmarks, fit (one call)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.jobs import RigState
from shared.morphable import MorphableModel

from .correspondence import SurfacePoints, load_mesh_points
from .crop import Crop
from .detect import Face, detect_faces
from .errors import FitError
from .landmarks import MESH_OVAL, MESH_TO_IBUG68, aligned_crop, ibug68_from_mesh
from .photometric import refine_on_shading
from .response import load_response
from .rigfit import GOOD_PX, JAW_WEIGHT, LAMBDA_ID_MESH, ROUGH_PX, RigFit, fit_rig, project_fit

# The shading refinement stands unless it moves the median landmark residual by more than this (px at 512²;
# MediaPipe's points lean toward an average face, so a truer face sits 1-2 px off them on renders of known faces,
# docs/FIT.md) or explains the skin worse than this mean colour error (0..1 RGB; renders 0.02-0.04, colour portraits
# 0.08-0.10; the gray near-profile cameraman, before gray photos were skipped outright, 0.14).
SHADING_LANDMARK_SLACK_PX = 2.0
MAX_SHADING_ERROR = 0.12
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
                        init=init, image=crop.image)
    dense = load_mesh_points(rig) is not None
    med = float(np.median(fit.residual_px))
    if fit.verdict == "failed":
        raise FitError(name, "landmarks the rig can follow", f"a median landmark error of {med:.1f} px",
                       "use a clearer, more frontal photo of one face", code="fit_failed")
    if fit.verdict == "rough":
        warnings.append(f"rough fit: median landmark error {med:.1f} px at 512²")
    return PortraitFit(crop, face, landmarks, fit, warnings + fit.warnings, mesh, dense)


def fit_landmarks(rig: MorphableModel, mesh: np.ndarray, *, calibrated: bool = False,
                  image: np.ndarray | None = None, **flags: Any) -> RigFit:
    """Fit ``rig`` to MediaPipe's 468 points float [468, 2] (crop px): densely when the rig has a correspondence
    table (:mod:`backend.fit.correspondence`, identity prior ``LAMBDA_ID_MESH``), else on the 68 iBUG landmarks.
    Either way the returned residual and verdict are the 68 iBUG landmarks' (the rig's own surface points that
    correspond to them).

    ``image`` (the 512² crop the points were found in) refines identity, rotation and translation on the shading
    of the skin (:mod:`backend.fit.photometric`), when the fit is dense and identity is being fitted; then, the
    shading's face held, expressions, rotation and translation are fitted to the points again (as far as the flags
    fit them). The refined fit stands if it still follows the landmarks (median iBUG residual within
    ``SHADING_LANDMARK_SLACK_PX`` of the landmark fit's) and explains the skin (mean colour error under
    ``MAX_SHADING_ERROR``); otherwise the landmark fit does, with a warning. ``RigFit.shading_error`` says which.

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
    fit = _with_ibug_residual(rig, fit_rig(rig, mesh, points=table, weights=weights, response=response,
                                           lambda_id=LAMBDA_ID_MESH, **flags), table, ibug)
    if image is None or not flags.get("fit_identity", True) or calibrated:
        return fit
    shading = refine_on_shading(rig, image, fit, mesh, table, weights, fit_pose=flags.get("fit_pose", True))
    why = shading.skipped
    if why is None and not shading.colour_error <= MAX_SHADING_ERROR:  # (nan too)
        why = f"skin colour error {shading.colour_error:.2f}, over {MAX_SHADING_ERROR}"
    if why is None:
        # the shading's face held, expressions and pose fitted to the landmarks again: an expression read with the
        # landmark fit's face is not the one the shading's face needs to follow them
        refined = fit_rig(rig, mesh, points=table, weights=weights, lambda_id=LAMBDA_ID_MESH, fit_identity=False,
                          fit_expression=flags.get("fit_expression", True), fit_pose=flags.get("fit_pose", True),
                          init=shading.fit.state, translation=shading.fit.translation)
        refined.warnings = list(fit.warnings)  # the photo's (a profile view): said once, by the landmark fit
        refined = _with_ibug_residual(rig, refined, table, ibug)
        before, after = float(np.median(fit.residual_px)), float(np.median(refined.residual_px))
        if after <= before + SHADING_LANDMARK_SLACK_PX:
            refined.shading_error = shading.colour_error
            return refined
        why = f"landmark error {after:.1f} px against {before:.1f} px"
    fit.warnings.append(f"the face's shading was not used for its shape ({why}): identity from the landmarks only; "
                        "a colour photo of an uncovered face in soft, even light gives a closer likeness")
    return fit


def _with_ibug_residual(rig: MorphableModel, fit: RigFit, table: SurfacePoints, ibug: np.ndarray) -> RigFit:
    """Set ``fit``'s residual and verdict from the 68 iBUG landmarks (the table's points that make them)."""
    residual = np.linalg.norm(project_fit(rig, fit, table.combine(MESH_TO_IBUG68)) - ibug, axis=1)
    med = float(np.median(residual))
    fit.residual_px = residual
    fit.verdict = "good" if med < GOOD_PX else "rough" if med < ROUGH_PX else "failed"
    return fit

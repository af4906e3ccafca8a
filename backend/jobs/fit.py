"""The ``fit`` job: a portrait photo -> its aligned crop, landmarks and the rig fitted to the face.

1. decode the photo (any image file within the protocol's limits; EXIF orientation honoured)
2. fit (``backend.fit.fit_portrait``): the largest face (several faces: a warning event naming the others), the
   reference implementation's 512² crop, 68 landmarks, the rig's identity, expression and head pose under the crop's
   camera (``shared.conventions.crop_camera``, the head translated)
4. return crop.png, landmarks.png (the crop with its landmarks: what the add-on's panel shows), overlay.png (the
   fitted rig's normal map over the crop, with the landmarks) and the fit as JSON meta:

    rig            RigState (shared.jobs) as a dict: identity, expressions, pose, gaze
    translation_m  float [3] the head's translation in the crop camera's frame, metres
    landmarks5     float [5, 2] crop px: the 5 points the crop was aligned on (eye, eye, nose tip, mouth corners;
                   image left first);  aligned_on  where they came from ("mtcnn, steadied" by default; "mtcnn",
                   "face mesh, mirror-averaged");  landmarks  float [68, 2] crop px (x right, y down, pixel corners at integers)
    residual_px    float [68] per-landmark reprojection error at 512²;  verdict "good" | "rough" | "failed"
    identity_from  "landmarks and shading" (identity refined on the skin's shading, backend.fit.photometric) or
                   "landmarks";  shading_error  the skin's mean colour error (0..1 RGB) then, else null
    face           {"box": [x0, y0, x1, y1] image px, "score"} of the face used (the largest)
    crop           {"to_crop": float [2, 3] affine image px -> crop px, "scale", "centre"};  image_size [W, H]
    warnings       what the user should know (several faces, extreme profile, a rough fit)

The add-on and the CLI stay torch-free and detector-free: they only read this result.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from backend.fit import FitError, fit_portrait
from backend.jobs.photos import as_job_failed, decode_photo, warn
from backend.runner import Artifact, Input, JobContext, JobFailed, JobResult
from shared.conventions import crop_camera
from shared.jobs import JOB_KINDS, FitParams
from shared.morphable import RigNotFound, load_default_rig
from shared.raster import render_normal_map
from shared.spec import to_dict
from shared.png import encode_png

CROP_RES = 512
LANDMARK_COLOUR = (64, 255, 64)
LANDMARK5_COLOUR = (255, 64, 64)
OVERLAY_ALPHA = 0.55  # normal map over the crop: enough to judge the fit, the face still visible beneath


class FitRunner:
    kind = JOB_KINDS["fit"]

    def __init__(self, **_: Any) -> None:
        pass

    def rig(self, name: str) -> Any:
        """The backend's morphable model called ``name`` (loaded once per process: shared.morphable)."""
        try:
            return load_default_rig(name)
        except (RigNotFound, ValueError) as e:
            raise JobFailed(f"params.rig: expected a rig the backend has (ict, bfm), received {name!r} ({e})",
                            "install the rig data on the backend (docs/RIGS.md) or choose ict",
                            code="missing_rig") from None

    def run(self, params: FitParams, inputs: dict[str, Input], ctx: JobContext) -> JobResult:
        ctx.progress("decode", 0, 2, "reading the photo")
        image = decode_photo(inputs["photo"], "photo")
        model = self.rig(params.rig)
        ctx.progress("fit", 1, 2, "finding the face and fitting the rig to its landmarks")
        started = time.monotonic()
        try:
            portrait = fit_portrait(image, model, fit_identity=params.fit_identity,
                                    fit_expression=params.fit_expression, fit_pose=params.fit_pose,
                                    init=params.init, name="inputs.photo")
        except FitError as e:
            raise as_job_failed(e, "photo") from None
        fit_s = time.monotonic() - started
        warnings = [f"inputs.photo: {w}" for w in dict.fromkeys(portrait.warnings)]  # other faces, profile, rough
        for w in warnings:
            warn(ctx, w)
        artifacts = self._images(portrait, model)
        ctx.progress("fit", 2, 2, f"fit {portrait.fit.verdict}: mean landmark error "
                                  f"{float(np.mean(portrait.fit.residual_px)):.1f} px at {CROP_RES}²")
        meta = fit_meta(portrait, image.shape, warnings)
        meta["fit_s"] = round(fit_s, 3)
        return JobResult(meta, artifacts)

    def _images(self, portrait: Any, model: Any) -> list[Artifact]:
        crop = np.asarray(portrait.crop.image, dtype=np.uint8)
        marked = draw_landmarks(crop, portrait.landmarks, crop_landmarks5(portrait))
        normals, mask = fitted_normal_map(model, portrait.fit)
        overlay = crop.astype(np.float32)
        overlay[mask] = (1 - OVERLAY_ALPHA) * overlay[mask] + OVERLAY_ALPHA * normals[mask]
        overlay = draw_landmarks(overlay.round().astype(np.uint8), portrait.landmarks, crop_landmarks5(portrait))
        return [Artifact("crop.png", "image/png", encode_png(crop)),
                Artifact("landmarks.png", "image/png", encode_png(marked)),
                Artifact("overlay.png", "image/png", encode_png(overlay))]


def crop_landmarks5(portrait: Any) -> np.ndarray:
    """float64 [5, 2] crop px: the 5 points the crop was aligned on (``Crop.landmarks5``, recorded by
    ``backend.fit.aligned_crop``), mapped by the crop's affine."""
    return portrait.crop.points_to_crop(portrait.crop.landmarks5)


def fitted_vertices(model: Any, fit: Any) -> np.ndarray:
    """float64 [V, 3] the fitted rig posed and translated into the crop camera's scene (head frame, metres)."""
    s = fit.state
    v = model.evaluate(s.identity or None, dict(s.expressions) or None, s.pose, s.gaze)
    return np.asarray(v, dtype=np.float64) + np.asarray(fit.translation, dtype=np.float64)


def fitted_normal_map(model: Any, fit: Any) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [512, 512, 3] normal-map colours 0..255, bool [512, 512] coverage) of the fitted rig's normal-map
    region in the crop camera (shared.raster: the same encoding the prior's ControlNet sees)."""
    img = render_normal_map(fitted_vertices(model, fit), np.asarray(model.normal_region_faces),
                            crop_camera(CROP_RES))
    img = np.asarray(img)
    return img[..., :3].astype(np.float32), img[..., :3].any(axis=-1)


def draw_landmarks(image: np.ndarray, dense: np.ndarray, five: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] a copy of ``image`` with the dense landmarks (green, radius 2 px) and the 5 alignment
    landmarks (red, radius 3 px) drawn as discs; points are px with pixel corners at integers."""
    out = np.array(image, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    for points, colour, r in ((dense, LANDMARK_COLOUR, 2.0), (five, LANDMARK5_COLOUR, 3.0)):
        for x, y in np.asarray(points, dtype=np.float64).reshape(-1, 2):
            if not (np.isfinite(x) and np.isfinite(y)):
                continue
            x0, x1 = max(0, int(x - r)), min(w, int(x + r) + 1)
            y0, y1 = max(0, int(y - r)), min(h, int(y + r) + 1)
            if x0 >= x1 or y0 >= y1:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            disc = (xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= r * r
            out[y0:y1, x0:x1][disc] = colour
    return out


def fit_meta(portrait: Any, image_shape: tuple, warnings: list[str]) -> dict:
    """The result's JSON meta (see the module docstring)."""
    fit, crop = portrait.fit, portrait.crop
    residual = np.asarray(fit.residual_px, dtype=np.float64)
    return {
        "rig": to_dict(fit.state),
        "translation_m": _floats(fit.translation),
        "landmarks5": _floats(crop_landmarks5(portrait)),
        "aligned_on": crop.aligned_on,
        "landmarks": _floats(portrait.landmarks),
        "residual_px": _floats(residual),
        "residual_mean_px": round(float(np.mean(residual)), 3),
        "verdict": fit.verdict,
        "identity_from": "landmarks" if fit.shading_error is None else "landmarks and shading",
        "shading_error": None if fit.shading_error is None else round(float(fit.shading_error), 4),
        "face": {"box": _floats(portrait.face.box), "score": round(float(portrait.face.score), 4)},
        "crop": {"to_crop": _floats(crop.to_crop), "scale": float(crop.scale), "centre": _floats(crop.centre),
                 "size": CROP_RES},
        "image_size": [int(image_shape[1]), int(image_shape[0])],
        "warnings": list(warnings),
    }


def _floats(a: Any) -> Any:
    """Nested lists of floats rounded to 1e-4 (JSON-safe, small)."""
    return np.round(np.asarray(a, dtype=np.float64), 4).tolist()

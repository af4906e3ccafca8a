"""Portrait fitting: photo -> face + 5 landmarks -> the reference crop -> 68 landmarks -> a fitted rig.

Plain components (no job service): the ``fit`` job, the add-on's Match Portrait and the CLI sequence them.
Facts, models and licences: docs/FIT.md.
"""

from __future__ import annotations

from .crop import CROP_RES, STANDARD_LM5, Crop, centre_crop, reference_crop
from .detect import Face, detect_faces, steady_landmarks
from .errors import FitError, PhotoError
from .landmarks import aligned_crop, detect_landmarks, five_from_mesh
from .photo import load_photo
from .portrait import PortraitFit, fit_portrait
from .rigfit import RigFit, fit_rig, posed_vertices, project_fit

__all__ = ["CROP_RES", "STANDARD_LM5", "Crop", "Face", "FitError", "PhotoError", "PortraitFit", "RigFit",
           "aligned_crop", "centre_crop", "detect_faces", "detect_landmarks", "fit_portrait", "fit_rig",
           "five_from_mesh", "load_photo", "posed_vertices", "project_fit", "reference_crop",
           "steady_landmarks"]

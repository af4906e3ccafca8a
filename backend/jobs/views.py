"""The distillation views of a ``generate`` job, framed as the reference implementation frames them.

The reference renders each distillation view's normal map and re-crops it on the face's projected landmarks, so
every view has its own intrinsics (docs/FIT.md, "The distillation views": the frontal view's principal point moves
~29 px, focal x0.96..0.99 on the ICT head — not negligible). ``backend.fit.crop.reference_view_cameras`` gives those
cameras (same pose, K' = A K); this module picks the 68 landmarks of the posed mesh the job received, which needs
the rig the request names (its ``landmarks68`` vertex indices) and a mesh of that rig's vertex count. Any other mesh
keeps the centred grid, and the job's meta says which framing it used.
"""

from __future__ import annotations

import numpy as np

from backend.fit.crop import reference_view_cameras
from shared.conventions import GRID_AZ_DEG, GRID_EL_DEG, REFERENCE_RES, Camera, reference_grid
from shared.jobs import RigState
from shared.morphable import RigNotFound, load_default_rig


def distill_views(rig: RigState, vertices: np.ndarray, n_az: int, n_el: int, az_deg: float = GRID_AZ_DEG,
                  el_deg: float = GRID_EL_DEG, res: int = REFERENCE_RES) -> tuple[list[Camera], str]:
    """(cameras, framing): the reference grid of ``n_az`` x ``n_el`` views at ``res``, each re-framed on the posed
    mesh's 68 landmarks ("reference"), or the centred grid ("centred") when the mesh is not the named rig's.

    vertices: float [V, 3] the posed mesh (head frame, metres), as the job renders its normal maps.
    az_deg, el_deg: the grid's half-ranges in degrees (``DistillConfig.view_az_deg`` / ``view_el_deg``).
    """
    return framed(reference_grid(res, n_az, n_el, az_deg, el_deg), rig, vertices)


def framed(cameras: list[Camera], rig: RigState, vertices: np.ndarray) -> tuple[list[Camera], str]:
    """(cameras, framing): ``cameras`` (square views) re-framed on the posed mesh's 68 landmarks as the reference
    frames its views, at their own resolution ("reference"); unchanged ("centred") for a mesh that is not the named
    rig's."""
    try:
        model = load_default_rig(rig.model)
    except (RigNotFound, ValueError):
        return list(cameras), "centred"
    landmarks = model.arrays.get("landmarks68")
    if landmarks is None or len(vertices) != model.n_vertices:
        return list(cameras), "centred"
    lm3d = np.asarray(vertices, dtype=np.float64)[np.asarray(landmarks, dtype=np.int64)]  # [68, 3]
    at_512 = [c if c.width == REFERENCE_RES else c.scaled(REFERENCE_RES) for c in cameras]  # the crop's geometry
    views = reference_view_cameras(at_512, lm3d)
    return [v if v.width == c.width else v.scaled(c.width, c.height) for v, c in zip(views, cameras)], "reference"

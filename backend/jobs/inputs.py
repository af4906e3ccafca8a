"""A preview's and a generate's inputs, read and checked once for both: the posed mesh and the reference portrait.

    vertices  float32 [V, 3] the posed rig in the head frame (``shared.conventions``), metres
    faces     int64 [F, 3] triangle indices into vertices
    reference optional portrait (``shared.protocol.Png`` / ``Blob`` / bytes), framed by ``backend.jobs.photos``

Every failure is a :class:`JobFailed` naming the input, what was expected and the fix.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from backend.jobs.photos import read_reference
from backend.runner import Input, JobContext, JobFailed


def read_mesh(inputs: dict[str, Input]) -> tuple[np.ndarray, np.ndarray]:
    """(vertices float32 [V, 3], faces int64 [F, 3]) of the request; faces must index the vertices."""
    vertices = np.asarray(inputs["vertices"], dtype=np.float32)
    faces = np.asarray(inputs["faces"]).astype(np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise JobFailed(f"inputs.faces: expected indices in [0, {len(vertices)}), received "
                        f"[{faces.min()}, {faces.max()}]", "send faces that index the vertices array",
                        code="invalid_input")
    return vertices, faces


def read_reference_input(inputs: dict[str, Input], resolution: int, framing: str,
                         ctx: JobContext) -> Optional[np.ndarray]:
    """The ``reference`` portrait as float32 [3, R, R] in 0..1 framed as ``framing`` says
    (``backend.jobs.photos.read_reference``), or None when the request sent none."""
    if inputs.get("reference") is None:
        return None
    return read_reference(inputs["reference"], resolution, framing, ctx)

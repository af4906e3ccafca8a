"""Mesh and texture export: a :class:`backend.interfaces.Field` -> a clean UV-textured GLB in the head frame.

    result = export_field(field, ExportConfig(), progress=lambda stage, step, total: ...)
    open("head.glb", "wb").write(result.glb)

Stages (reported through ``progress``): sample -> iso -> [complete] -> marching_cubes -> clean -> decimate ->
unwrap -> [fill] -> bake -> write; the bracketed ones run with a ``Completion`` (the rig's full head where no view
looked). See docs/EXPORT.md.
"""

from backend.export.complete import Completion, rig_body
from backend.export.pipeline import FRAME, ExportResult, export_field

__all__ = ["Completion", "ExportResult", "export_field", "FRAME", "rig_body"]

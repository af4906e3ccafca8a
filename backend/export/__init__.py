"""Mesh and texture export: a :class:`backend.interfaces.Field` -> a clean UV-textured GLB in the head frame.

    result = export_field(field, ExportConfig(), progress=lambda stage, step, total: ...)
    open("head.glb", "wb").write(result.glb)

Stages (reported through ``progress``): sample -> iso -> marching_cubes -> clean -> decimate -> unwrap -> bake ->
write. See docs/EXPORT.md.
"""

from backend.export.pipeline import FRAME, ExportResult, export_field

__all__ = ["ExportResult", "export_field", "FRAME"]

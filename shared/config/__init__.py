"""One config dataclass per component, shared by the CLI, the protocol and the add-on (same field names everywhere).

Each module has one owner: ``prior`` (the 2D prior), ``distill`` (the distillation schedule, its presets and the
field), ``export`` (mesh and texture).
"""

from .distill import DistillConfig
from .export import ExportConfig
from .prior import PriorConfig

__all__ = ["DistillConfig", "ExportConfig", "PriorConfig"]

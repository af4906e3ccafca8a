"""One config dataclass per component, shared by the CLI, the protocol and the add-on (same field names everywhere).

Each module has one owner: ``prior`` (the 2D prior), ``distill`` (the distillation schedule, its presets and the
field), ``export`` (mesh and texture).
"""

from shared.config.distill import DistillConfig
from shared.config.export import ExportConfig
from shared.config.prior import PriorConfig

__all__ = ["DistillConfig", "ExportConfig", "PriorConfig"]

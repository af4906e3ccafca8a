"""Progressive distillation of a 2D prior into the head NeRF: schedule, losses, the loop, the oracle prior."""

from backend.distill.loop import DistillEvent, DistillResult, distill
from backend.distill.schedule import Schedule, TargetUpdate, denoising_timesteps

__all__ = ["DistillEvent", "DistillResult", "Schedule", "TargetUpdate", "denoising_timesteps", "distill"]

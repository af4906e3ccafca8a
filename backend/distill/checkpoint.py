"""Distillation checkpoints in a job's workdir: the training state (field, occupancy grid, optimiser, step, RNG) and
the current targets (uint8, written at each target update). Files are replaced atomically, so a job killed while
saving resumes from the previous checkpoint. Loaded with ``weights_only=True``: no arbitrary unpickling."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import torch

STATE, TARGETS = "distill_state.pt", "distill_targets.pt"


def _save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_state(folder: Path, step: int, field, occupancy, optimizer, generator: torch.Generator,
               config: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    _save({"step": step, "field": field.state_dict(), "occupancy": occupancy.state_dict(),
           "optimizer": optimizer.state_dict(), "rng": generator.get_state(), "config": config}, folder / STATE)


def load_state(folder: Path) -> Optional[dict]:
    path = folder / STATE
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def save_targets(folder: Path, update_index: int, targets: torch.Tensor) -> None:
    """targets uint8 [V, 3, R, R] (the loop keeps them 8-bit, so a resumed run sees exactly the same values)."""
    folder.mkdir(parents=True, exist_ok=True)
    _save({"update": update_index, "targets": targets.cpu()}, folder / TARGETS)


def load_targets(folder: Path) -> Optional[tuple[int, torch.Tensor]]:
    path = folder / TARGETS
    if not path.is_file():
        return None
    data = torch.load(path, map_location="cpu", weights_only=True)
    return int(data["update"]), data["targets"]

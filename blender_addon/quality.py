"""Quality presets shown in the panel, with time estimates.

The preset names are ``shared.config.DistillConfig.preset``'s choices (owned by distillation), and the estimates come
from ``DistillConfig.estimated_seconds`` — one model of the cost for the menu, the panel and the backend alike — for
one data-centre GPU and the Joker prior, and say so. Until bench/gpu_check.sh has measured the per-unit costs on a GPU
they are calculated, and the text says "calculated". The backend reports the real ETA while a job runs.
"""

from __future__ import annotations

import dataclasses

from .shared.config import DistillConfig
from .shared.config.distill import estimate_source

# name -> (label, description). Unknown names (a newer backend) still work.
_KNOWN = {
    "draft": ("Draft", "few views and steps, a small texture: check pose and prompt"),
    "turbo": ("Turbo", "minutes: 1/25 of the paper's prior passes at 256 px; less detail, fewer views"),
    "fast": ("Fast", "a shorter schedule; most of the paper's quality"),
    "paper": ("Paper", "the reference schedule of the Joker paper"),
}


def preset_names() -> tuple[str, ...]:
    """The distillation presets the shared config accepts, in declaration order."""
    field = next(f for f in dataclasses.fields(DistillConfig) if f.name == "preset")
    return tuple(field.metadata.get("choices") or (field.default,))


def enum_items() -> list[tuple[str, str, str]]:
    """EnumProperty items: (identifier, "Label (estimate)", description)."""
    items = []
    for name in preset_names():
        label, doc = _KNOWN.get(name, (name.title(), "a preset this add-on does not know"))
        text = estimate(name)
        items.append((name, f"{label} ({text})", f"{doc}; estimate on one data-centre GPU: {text}"))
    return items


def estimate(name: str, max_steps: int = 0) -> str:
    """"about N min" for a preset (optionally capped at ``max_steps``) on one GPU, with ", calculated" while the
    per-unit costs behind it are not yet measured on a GPU."""
    try:
        cfg = DistillConfig(preset=name)
        if 0 < max_steps < cfg.resolved().steps:
            cfg = cfg.with_steps(max_steps)
        seconds = cfg.estimated_seconds("cuda")
    except (KeyError, ValueError):
        return "unknown"
    text = f"about {max(1, round(seconds / 60))} min" if seconds < 5400 else f"about {seconds / 3600:.1f} h"
    return text + (", calculated" if estimate_source("cuda") == "calculated" else "")


def default_preset() -> str:
    names = preset_names()
    return "draft" if "draft" in names else names[0]

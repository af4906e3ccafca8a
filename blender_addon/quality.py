"""Quality presets shown in the panel, with honest time estimates.

The preset names are ``shared.config.DistillConfig.preset``'s choices (owned by distillation); the estimates are
for one current data-centre GPU (H100 class) and the joker prior, and say so. The backend reports the real ETA
while a job runs.
"""

from __future__ import annotations

import dataclasses

from .shared.config import DistillConfig

# name -> (label, estimate shown beside it, description). Unknown names (a newer backend) still work.
_KNOWN = {
    "draft": ("Draft", "about 3 min", "few views and steps, a small texture: check pose and prompt"),
    "fast": ("Fast", "about 15 min", "a shorter schedule; most of the paper's quality"),
    "paper": ("Paper", "about 1 h", "the reference schedule of the Joker paper"),
}


def preset_names() -> tuple[str, ...]:
    """The distillation presets the shared config accepts, in declaration order."""
    field = next(f for f in dataclasses.fields(DistillConfig) if f.name == "preset")
    return tuple(field.metadata.get("choices") or (field.default,))


def enum_items() -> list[tuple[str, str, str]]:
    """EnumProperty items: (identifier, "Label (estimate)", description)."""
    items = []
    for name in preset_names():
        label, estimate, doc = _KNOWN.get(name, (name.title(), "unknown", "a preset this add-on does not know"))
        items.append((name, f"{label} ({estimate})", f"{doc}; estimate on one H100-class GPU: {estimate}"))
    return items


def estimate(name: str) -> str:
    return _KNOWN.get(name, ("", "unknown", ""))[1]


def default_preset() -> str:
    names = preset_names()
    return "draft" if "draft" in names else names[0]

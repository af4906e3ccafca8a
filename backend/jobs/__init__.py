"""Job runners by kind. Each module owns one kind; ``default_runners`` is what `joker-head serve` registers."""

from __future__ import annotations

from typing import Any

from backend.runner import Runner


def default_runners(**options: Any) -> dict[str, Runner]:
    """The production runners. ``options`` (models_dir, device, ...) are passed to each runner's constructor."""
    from backend.jobs.fit import FitRunner
    from backend.jobs.generate import GenerateRunner
    from backend.jobs.preview import PreviewRunner
    from backend.jobs.selftest import SelftestRunner

    runners: dict[str, Runner] = {"selftest": SelftestRunner(), "preview": PreviewRunner(**options),
                                  "generate": GenerateRunner(**options), "fit": FitRunner(**options)}
    return runners

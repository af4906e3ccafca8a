"""Job runners by kind. Each module owns one kind; ``default_runners`` is what `joker-head serve` registers."""

from __future__ import annotations

from typing import Any

from backend.prior.cache import DEFAULT_MAX_MODELS, PriorCache
from backend.runner import Runner


def default_runners(max_models: int = DEFAULT_MAX_MODELS, **options: Any) -> dict[str, Runner]:
    """The production runners. ``options`` (models_dir, device, ...) are passed to each runner's constructor.
    The preview and generate jobs share one :class:`PriorCache` (at most ``max_models`` loaded priors per device),
    so a preview followed by a generate holds one SD1.5 stack, not two; the fit job loads no prior."""
    from backend.jobs.fit import FitRunner
    from backend.jobs.generate import GenerateRunner
    from backend.jobs.preview import PreviewRunner
    from backend.jobs.selftest import SelftestRunner

    priors = PriorCache(max_models)
    runners: dict[str, Runner] = {"selftest": SelftestRunner(), "preview": PreviewRunner(priors=priors, **options),
                                  "generate": GenerateRunner(priors=priors, **options), "fit": FitRunner(**options)}
    return runners

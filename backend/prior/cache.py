"""One cache of loaded priors per server, shared by every job kind: SD1.5-size weights load far slower than a
preview runs, and two copies of them on one GPU (a preview's and a generate's) do not fit beside a distillation.

``PriorCache.get(config, models_dir, device)`` returns the loaded prior for that device and the config's fields
(plus a single-file fine-tune's path, mtime and size, so a fine-tune saved again under the same name reloads).
Each device keeps at most ``max_models`` priors, least recently used dropped first; the dropped one is released
and the CUDA allocator's cache emptied *before* the next one loads, so the bound holds at the peak too.
A job that still holds a dropped prior keeps it alive until it ends (the job queue runs one job per device).
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional

from backend.prior import load_prior
from backend.prior.layout import single_file
from shared.config.prior import PriorConfig
from shared.paths import models_dir as default_models_dir
from shared.spec import to_dict

Loader = Callable[[PriorConfig, Path, str], Any]  # (config, models dir, device) -> a loaded prior
DEFAULT_MAX_MODELS = 1  # per device: one SD1.5 stack (about 2.6 GB in fp16) beside the distillation's working set


class PriorCache:
    """Loaded priors by device, at most ``max_models`` per device (LRU). Thread-safe: a load holds the lock, so two
    jobs asking for the same prior at once load it once."""

    def __init__(self, max_models: int = DEFAULT_MAX_MODELS, loader: Optional[Loader] = None) -> None:
        if int(max_models) < 1:
            raise ValueError(f"PriorCache.max_models: expected an integer >= 1, received {max_models!r}; "
                             "keep at least one model per device (1 is the default)")
        self.max_models = int(max_models)
        self._load: Loader = loader or load_prior
        self._priors: dict[str, OrderedDict[tuple, Any]] = {}  # device -> key -> prior, least recent first
        self._lock = threading.Lock()

    def get(self, config: PriorConfig, models_dir: Optional[Path], device: Optional[str]) -> Any:
        """The loaded prior for ``config`` from ``models_dir`` (default ``shared.paths.models_dir()``) on ``device``
        (default: CUDA when present), loaded on first use and reused while the key stays the same."""
        root = Path(models_dir or default_models_dir())
        device = _resolve(device)
        key = self.key(config, root)
        with self._lock:
            held = self._priors.setdefault(device, OrderedDict())
            if key in held:
                held.move_to_end(key)
                return held[key]
            while len(held) >= self.max_models:  # free the least recent before the new weights arrive
                held.popitem(last=False)
                _release(device)
            prior = self._load(config, root, device)
            held[key] = prior
            return prior

    @staticmethod
    def key(config: PriorConfig, root: Path) -> tuple:
        """What identifies a loaded prior: the models dir, every config field, and a single-file fine-tune's
        (path, mtime ns, size) so an artist re-saving it under the same name gets it reloaded."""
        key: tuple = (str(root),) + tuple(sorted(to_dict(config).items()))
        own = single_file(root, config.base_model)
        if own is not None and own.exists():
            stat = own.stat()
            key += ((str(own), stat.st_mtime_ns, stat.st_size),)
        return key

    def held(self, device: Optional[str] = None) -> list[Any]:
        """The priors held on ``device`` (all devices when None), least recently used first."""
        with self._lock:
            devices = [_resolve(device)] if device is not None else list(self._priors)
            return [p for d in devices for p in self._priors.get(d, {}).values()]

    def __len__(self) -> int:
        return len(self.held())

    def clear(self) -> None:
        """Drop every prior (and empty the CUDA caches of the devices that held one)."""
        with self._lock:
            devices = list(self._priors)
            self._priors.clear()
            for device in devices:
                _release(device)


def _resolve(device: Optional[str]) -> str:
    if device:
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"  # load_prior's own default


def _release(device: str) -> None:
    """Return a dropped prior's memory now rather than at the next collection: its modules hold reference cycles
    (hooks, attention processors), and CUDA's caching allocator keeps freed blocks until told."""
    gc.collect()
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()

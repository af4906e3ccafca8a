"""Reading and strictly loading torch checkpoints for the prior: tensor-only unpickling, key-by-key mismatch reports.

Shared by both loaders (:mod:`backend.prior.loading` for the official checkpoint and diffusers folders,
:mod:`backend.prior.single_file` for an artist's fine-tune), so neither imports the other's internals.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from backend.prior.errors import PriorError

log = logging.getLogger(__name__)

DATA_PARALLEL_PREFIX = "module."  # what torch's DataParallel / DistributedDataParallel put before every key


class CheckpointError(PriorError):
    """The official checkpoint does not match the architecture (lists missing and unexpected keys)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message, hint or "check that the file is bfm_ft_NersembleCelebvtext_230000.bin from the "
                                          "authors' share; fetch it again with `joker-head fetch-models --mode joker`",
                         code="bad_checkpoint")


def _key_list(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def load_strict(module: nn.Module, sd: dict[str, torch.Tensor], component: str, hint: str = "") -> nn.Module:
    """Load ``sd`` into ``module`` (possibly on the meta device) strictly; a mismatch names the keys."""
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or unexpected:
        raise CheckpointError(f"{component}: the checkpoint does not match the model: "
                              f"missing keys [{_key_list(missing)}]; unexpected keys [{_key_list(unexpected)}]", hint)
    try:
        module.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:  # shape mismatches
        raise CheckpointError(f"{component}: {e}", hint) from e
    return module


def read_checkpoint(path: Path, hint: str = "") -> dict[str, torch.Tensor]:
    """A torch checkpoint as a flat {key: tensor} (a top-level ``state_dict`` unwrapped, a data-parallel ``module.``
    prefix stripped); never unpickles arbitrary objects (``weights_only=True``).

    Memory-mapped when the file allows it (the official one is ~9 GB); an old-format (pre-zip) pickle cannot be
    mapped and is read whole instead (docs/REFERENCE.md §1)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - e.g. a legacy pickle refuses mmap; the plain load below says what is wrong
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling refusal or corrupt zip is the same user problem
            raise CheckpointError(f"cannot read {path} as a tensor-only torch checkpoint: {e}", hint) from e
        log.info("%s is an old-format torch pickle: read without memory mapping", path)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} is not a state dict of tensors", hint)
    return strip_module_prefix(sd, str(path))


def strip_module_prefix(sd: dict[str, torch.Tensor], source: str = "the checkpoint") -> dict[str, torch.Tensor]:
    """``sd`` with a leading ``module.`` removed from every key that has one: training wrapped the prior for data
    parallelism, which saves keys that way (docs/REFERENCE.md §1). Logs a note when it strips anything."""
    wrapped = sum(k.startswith(DATA_PARALLEL_PREFIX) for k in sd)
    if not wrapped:
        return sd
    log.info("%s: stripped the data-parallel prefix %r from %d of %d keys", source, DATA_PARALLEL_PREFIX, wrapped,
             len(sd))
    out = {k.removeprefix(DATA_PARALLEL_PREFIX): v for k, v in sd.items()}
    if len(out) < len(sd):  # stripping must not silently drop one of two tensors
        both = sorted(k for k in out if k in sd and DATA_PARALLEL_PREFIX + k in sd)
        raise CheckpointError(f"{source} holds keys both with and without {DATA_PARALLEL_PREFIX!r}: "
                              f"[{_key_list(both)}]")
    return out


def _empty(build):
    """Build a module without allocating its parameters (they arrive from the checkpoint with assign=True)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return build()

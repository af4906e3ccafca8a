"""The job-runner interface: what the server hands a job, and what a job hands back.

A runner is any object with ``kind`` (a :class:`shared.jobs.JobKind`) and ``run(params, inputs, ctx) -> JobResult``.
It reports progress through ``ctx.progress``, which is also where cancellation lands (it raises
:class:`JobCancelled`), so a runner that reports often is cancelled promptly. Runners never touch sockets or the job
store: the server owns both.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Union

import numpy as np

from shared.errors import JokerError
from shared.jobs import JobKind

Input = Union[np.ndarray, bytes]  # arrays for "array" frames, encoded bytes for "png" and "bytes" frames


class JobCancelled(Exception):
    """Raised inside a runner when the job was cancelled; the server records the job as cancelled."""


class JobFailed(JokerError):
    """A runner's way to fail with a message and a hint for the user (e.g. bad inputs). ML packages raise their own
    family errors instead (``PriorError``, ``ExportError``); the server records any of them the same way."""

    default_code = "job_failed"


@dataclass
class Artifact:
    """One result file. ``media_type`` e.g. model/gltf-binary, image/png, application/json."""

    name: str
    media_type: str
    data: bytes


@dataclass
class JobResult:
    meta: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)


@dataclass
class ProgressEvent:
    stage: str
    step: int
    total: int
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    preview: Optional[np.ndarray] = None  # uint8 [H, W, 3]
    eta_s: Optional[float] = None


class JobContext:
    """Handed to a runner: where to report progress, where to keep checkpoints, whether the job was cancelled.

    ``workdir`` is the job's private scratch folder; a runner that checkpoints there is resumed after a restart
    (``resume`` is True then).
    """

    def __init__(self, job_id: str, workdir: Path, device: str = "cpu", resume: bool = False,
                 emit: Callable[[ProgressEvent], None] = lambda e: None):
        self.job_id, self.workdir, self.device, self.resume = job_id, workdir, device, resume
        self._emit = emit
        self._cancel = threading.Event()
        self._started = time.monotonic()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled(self.job_id)

    def progress(self, stage: str, step: int, total: int, message: str = "", preview: Optional[np.ndarray] = None,
                 eta_s: Optional[float] = None, **metrics: float) -> None:
        """Report progress (and raise :class:`JobCancelled` if the job was cancelled)."""
        self.check_cancelled()
        self._emit(ProgressEvent(stage, step, total, message, {k: float(v) for k, v in metrics.items()},
                                 preview, eta_s))


class Runner(Protocol):
    kind: JobKind

    def run(self, params: Any, inputs: dict[str, Input], ctx: JobContext) -> JobResult: ...

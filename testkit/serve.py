"""The server as the tests and benchmarks meet it: a free loopback endpoint, a client's inbox, a `joker-head serve`
process that can be killed with SIGKILL, and a real tiny filesystem for its jobs dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from shared import protocol as P
from shared.client import Client

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # a child process imports this checkout, not an installed copy


def free_endpoint() -> str:
    """A loopback TCP endpoint on a port the OS just handed out (free now; the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


class Inbox:
    """Every event a client received, in order; :meth:`wait` hands out each matching event once."""

    def __init__(self, client: Client):
        self.client, self.events, self._taken = client, [], set()

    def wait(self, predicate: Callable[[P.Message], bool], timeout: float) -> Optional[P.Message]:
        """The first event not handed out yet that matches, pumping up to ``timeout`` seconds; None if none came."""
        deadline, i = time.monotonic() + timeout, 0
        while True:
            for i in range(i, len(self.events)):
                if i not in self._taken and predicate(self.events[i]):
                    self._taken.add(i)
                    return self.events[i]
            i = len(self.events)
            if time.monotonic() >= deadline:
                return None
            self.events.extend(self.client.pump(timeout_s=0.02))


def is_final(job: str) -> Callable[[P.Message], bool]:
    """A predicate for :meth:`Inbox.wait`: the job's ``result`` or ``error``, the last message it gets."""
    return lambda m: getattr(m.body, "job", None) == job and m.type in ("result", "error")


class ServeProcess:
    """`joker-head serve` as a separate process, so it can be killed with SIGKILL."""

    def __init__(self, endpoint: str, jobs_dir: Path, log: Path, preexec: Any = None):
        self.log = log
        out = open(log, "a")
        self.proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--bind", endpoint,
                                      "--jobs-dir", str(jobs_dir), "--devices", "cpu"], cwd=REPO, env=ENV,
                                     stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec)
        out.close()
        deadline = time.monotonic() + 30
        while "serving on" not in log.read_text() and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
            time.sleep(0.02)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[bool]:
    """A real, tiny filesystem: tmpfs (needs root). Yields False where mounting is not possible or JOKER_NO_MOUNT=1."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = not os.environ.get("JOKER_NO_MOUNT") and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode == 0
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)

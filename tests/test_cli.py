"""The `joker-head` command line against a real `joker-head serve` process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support import free_port

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(REPO)})


@contextlib.contextmanager
def serve(jobs_dir: Path, *extra: str):
    """`joker-head serve` on a free loopback port; yields its endpoint."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "serve", "--bind", endpoint, "--jobs-dir",
                             str(jobs_dir), "--devices", "cpu", *extra], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert "serving on" in proc.stdout.readline()
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def served(tmp_path):
    with serve(tmp_path / "jobs") as endpoint:
        yield endpoint


@pytest.mark.slow
def test_serve_limits_are_flags(tmp_path):
    """An operator sizes the queue and the request limits; what goes past them is refused with the limit named."""
    bad = cli("serve", "--max-queued", "0")
    assert bad.returncode == 2 and "--max-queued" in bad.stderr and ">= 1" in bad.stderr
    with serve(tmp_path / "jobs", "--max-queued", "1", "--max-request-mb", "1") as endpoint:
        first = cli("submit", "selftest", "--server", endpoint, "--params", '{"steps": 500, "step_s": 0.05}')
        assert first.returncode == 0, first.stderr
        second = cli("submit", "selftest", "--server", endpoint, "--params", '{"steps": 1}')
        assert second.returncode != 0 and "at most 1 queued or running" in second.stderr
        big = tmp_path / "big.npy"
        np.save(big, np.zeros((2**19 + 1,), np.float32))  # just over 2 MiB
        third = cli("submit", "selftest", "--server", endpoint, "--input", f"data={big}")
        assert third.returncode != 0 and str(2**20) in third.stderr, third.stderr
        assert cli("cancel", first.stdout.strip(), "--server", endpoint).returncode == 0


def test_help_explains_every_command():
    out = cli("--help")
    for command in ("serve", "ping", "submit", "status", "fetch", "cancel", "keys"):
        assert command in out.stdout
    assert "--curve-keys" in cli("serve", "--help").stdout


def test_serve_ping_submit_status_fetch(served, tmp_path):
    ping = cli("ping", "--server", served)
    assert ping.returncode == 0 and "selftest" in ping.stdout and "round trip" in ping.stdout
    sub = cli("submit", "selftest", "--server", served, "--params", '{"steps": 2, "result_bytes": 64}', "--wait",
              "--out", str(tmp_path / "out"))
    assert sub.returncode == 0, sub.stderr
    job = sub.stdout.splitlines()[0]
    assert "[selftest] 2/2" in sub.stdout
    meta = json.loads((tmp_path / "out" / job / "meta.json").read_text())
    assert meta["meta"]["steps"] == 2 and (tmp_path / "out" / job / "payload.bin").stat().st_size == 64
    assert job in cli("status", "--server", served).stdout
    fetched = cli("fetch", job, "--server", served, "--out", str(tmp_path / "again"))
    assert fetched.returncode == 0 and (tmp_path / "again" / job / "payload.bin").exists()


def test_bad_params_get_a_clear_error(served):
    out = cli("submit", "selftest", "--server", served, "--params", '{"steps": 0}')
    assert out.returncode == 2 and "params.steps" in out.stderr and "[1" in out.stderr


def test_cancel_and_unknown_job(served):
    sub = cli("submit", "selftest", "--server", served, "--params", '{"steps": 500, "step_s": 0.05}')
    job = sub.stdout.strip()
    time.sleep(0.3)
    assert "job " + job in cli("cancel", job, "--server", served).stdout
    unknown = cli("status", "f" * 32, "--server", served)
    assert unknown.returncode == 1 and "unknown_job" in unknown.stderr


def test_ping_without_a_server_says_what_to_check():
    out = cli("ping", "--server", f"tcp://127.0.0.1:{free_port()}", "--timeout", "0.5")
    assert out.returncode == 1 and "joker-head serve" in out.stderr and "Traceback" not in out.stderr


def test_serve_refuses_a_public_bind_without_keys(tmp_path):
    out = cli("serve", "--bind", "tcp://0.0.0.0:0", "--jobs-dir", str(tmp_path))
    assert out.returncode == 2 and "--curve-keys" in out.stderr

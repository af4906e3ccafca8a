"""Reliability and security of the real server: hostile input, kill -9, a full disk, failing jobs, load, keys.

Small counts of what bench/reliability.py runs at scale (see docs/RELIABILITY.md). Real sockets, real processes,
a real (tmpfs) filesystem; nothing of ours is mocked.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, Phase, given, settings

from backend.jobs.selftest import SelftestRunner
from backend.runner import Artifact, JobResult
from bench.hostile import (PNGS, Case, documented_codes, followups, hostile_case, judge, judge_followup, mutate,
                           with_req)
from bench.reliability import (ENV, REPO, Inbox, ServeProcess, free_endpoint, hypothesis_cases, is_final, load,
                               small_disk, unsafe_calls)
from shared import protocol as P
from shared.client import Client, ClientError, CurveKeys, Disconnected
from shared.png import PngError, decode_png

CODES = documented_codes()


def send_and_judge(sock: zmq.Socket, case: Case, n: int) -> None:
    req = with_req(case, f"t{n}")
    sock.send_multipart(case.frames)
    assert sock.poll(5000), f"no reply to {case.category}: {case.frames[0][:100]!r}"
    reply = sock.recv_multipart()
    problem = judge(case, req, reply, CODES)
    assert problem is None, f"{case.category}: {problem} <- {case.frames!r:.300}"
    for _ in range(followups(case, reply)):  # a fetch of a finished job: its final messages follow
        assert sock.poll(5000)
        assert judge_followup(reply, sock.recv_multipart()) is None


@pytest.fixture
def raw_socket(zmq_context):
    def connect(endpoint):
        sock = zmq_context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(endpoint)
        return sock
    return connect


# --- hostile input ---------------------------------------------------------------------------------------------------

def test_hostile_messages_are_answered_as_the_protocol_says(make_server, raw_socket):
    server = make_server(devices=(), max_frame=4 << 20, max_request=8 << 20)
    sock, count = raw_socket(server.endpoint), [0]

    @settings(max_examples=300, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(hostile_case())
    def check(case):
        count[0] += 1
        send_and_judge(sock, case, count[0])

    check()
    assert count[0] >= 250  # hypothesis really generated them
    rng, seeds = random.Random(1), hypothesis_cases(50, 1)
    for i in range(700):  # seeded mutants of hypothesis' cases, libFuzzer-style
        send_and_judge(sock, mutate(rng, rng.choice(seeds), rng.choice(seeds)), 10_000 + i)
    assert server.stats["internal_errors"] == 0 and all(t.is_alive() for t in server._threads)
    assert all(re.fullmatch(P.JOB_ID, p.name) for p in server.store.root.iterdir())  # nothing else became a path


@pytest.mark.parametrize("header, code", [
    (b'{"v": 1, "type": ["hello"]}', "unknown_type"),  # unhashable type: was an internal error
    (b'{"v": 1, "type": "fetch", "job": "' + b"a" * 32 + b'", "since": ' + b"9" * 400 + b"}", "bad_json"),
    (json.dumps({"v": 1, "type": "hello", "x" * 5000: 1}).encode(), "unknown_field"),  # field clipped to 256
    (b'{"v": 1, "type": "hello", "": 1}', "unknown_field"),  # an empty field name
    (b'{"v": 1, "type": "hello", "\\u0000": 1}', "unknown_field"),  # NUL in the field name
    (json.dumps({"v": 1, "type": "submit", "job": "a" * 32, "kind": "selftest", "frames": [
        {"name": "data", "kind": "array", "dtype": "uint8", "shape": [65536] * 4}]}).encode(), "bad_array"),  # 2**64
])
def test_inputs_that_used_to_break_replies(make_server, raw_socket, header, code):
    server = make_server(devices=())
    sock = raw_socket(server.endpoint)
    case = Case("regression", [header] + ([b""] if b'"frames"' in header else []))
    send_and_judge(sock, case, 0)
    sock.send_multipart(case.frames)
    assert sock.poll(5000) and P.decode(sock.recv_multipart(), P.MAX_RESULT_FRAME).body.code == code


def test_request_size_limits(make_server, raw_socket, make_client):
    server = make_server(devices=(), max_frame=1 << 20, max_request=2 << 20)
    sock = raw_socket(server.endpoint)
    sock.send_multipart(P.encode(P.Submit("a" * 32, "selftest", {}), {"data": np.zeros(2 << 20, np.uint8)}))
    assert not sock.poll(300)  # one frame over max_frame: dropped by libzmq, unanswered
    sock = raw_socket(server.endpoint)
    parts = {f"d{i}": np.zeros(900 << 10, np.uint8) for i in range(3)}
    sock.send_multipart(P.encode(P.Submit("a" * 32, "selftest", {}), parts, req="r"))
    assert sock.poll(5000)
    reply = P.decode(sock.recv_multipart(), P.MAX_RESULT_FRAME)
    assert reply.body.code == "request_too_large" and reply.req == "r" and not server.jobs
    assert make_client(server.endpoint).ping()[0].server == "joker-head"


def test_png_bombs_cost_nothing():
    bomb = PNGS[4]  # 64x64 declared, 64 MiB of zeros inside
    with pytest.raises(PngError, match="larger than its header"):
        decode_png(bomb)
    for bad in PNGS[1:4] + PNGS[5:8]:
        with pytest.raises(PngError):
            decode_png(bad)


def test_nothing_from_the_network_is_unpickled_or_evaluated():
    assert unsafe_calls() == []


# --- faults ----------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_kill9_mid_job_then_restart(tmp_path, zmq_context):
    endpoint, jobs = free_endpoint(), tmp_path / "jobs"
    server = ServeProcess(endpoint, jobs, tmp_path / "serve.log")
    client = Client(endpoint, context=zmq_context, timeout_s=1.0, heartbeat_s=0.2)
    try:
        done = client.submit("selftest", {"steps": 1, "result_bytes": 100_000})
        first = client.wait(done, timeout_s=30)
        running = client.submit("selftest", {"steps": 100, "step_s": 0.02})
        inbox = Inbox(client)
        assert inbox.wait(lambda m: m.type == "progress" and m.body.job == running and m.body.step >= 3, 30)
        t_kill = time.monotonic()
        server.kill9()
        assert inbox.wait(lambda m: isinstance(m.body, Disconnected), 10)
        assert time.monotonic() - t_kill < 1.0 + 1.0  # the client's timeout, plus pump granularity
        server = ServeProcess(endpoint, jobs, tmp_path / "serve.log")
        result = inbox.wait(is_final(running), 60)
        assert result.type == "result" and result.body.meta["resumed_from"] >= 3
        fresh = Client(endpoint, context=zmq_context, timeout_s=10)
        fresh.attach(done)
        again = fresh.wait(done, timeout_s=30)
        assert again.payloads["payload.bin"].data == first.payloads["payload.bin"].data
        fresh.close()
    finally:
        client.close()
        server.stop()


def test_crash_between_result_and_state_keeps_the_result(make_server, make_client, tmp_path):
    """kill -9 after the result folder is renamed into place but before state.json says done."""
    jobs = tmp_path / "jobs"
    server = make_server(jobs_dir=jobs)
    client = make_client(server.endpoint)
    job = client.submit("selftest", {"steps": 1, "result_bytes": 1000})
    digest = client.wait(job, timeout_s=10).body.meta["result_sha256"]
    server.stop()
    state = json.loads((jobs / job / "state.json").read_text())
    (jobs / job / "state.json").write_text(json.dumps({**state, "state": "running"}))  # the crash window
    (jobs / job / ".result-x").mkdir()  # and a half-written result of a later attempt
    restarted = make_server(jobs_dir=jobs)
    fresh = make_client(restarted.endpoint)
    fresh.attach(job)
    assert fresh.wait(job, timeout_s=10).body.meta["result_sha256"] == digest
    assert not (jobs / job / ".result-x").exists()


def test_client_killed_mid_job(tmp_path, zmq_context):
    endpoint = free_endpoint()
    server = ServeProcess(endpoint, tmp_path / "jobs", tmp_path / "serve.log")
    command = ["submit", "selftest", "--server", endpoint, "--params", '{"steps": 20, "step_s": 0.03}', "--wait",
               "--out", str(tmp_path)]
    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", *command], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        job = proc.stdout.readline().strip()
        assert re.fullmatch(P.JOB_ID, job)
        assert "[selftest]" in proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        later = Client(endpoint, context=zmq_context, timeout_s=10)
        later.attach(job)
        assert later.wait(job, timeout_s=30).body.meta["steps"] == 20
        later.close()
    finally:
        proc.kill()
        server.stop()


def _fill_disk_checks(client: Client, jobs: Path, too_big: int) -> None:
    first = client.submit("selftest", {"steps": 1, "result_bytes": 100_000})
    meta = client.wait(first, timeout_s=30).body.meta
    big = client.submit("selftest", {"steps": 1, "result_bytes": too_big})
    with pytest.raises(ClientError) as info:
        client.wait(big, timeout_s=30)
    assert info.value.error.code == "storage" and info.value.error.hint
    assert "disk" in info.value.error.message or "space" in info.value.error.message
    with pytest.raises(ClientError) as info:
        client.request(P.Submit("b" * 32, "selftest", {}), {"data": np.ones(too_big, np.uint8)})
    assert info.value.error.code == "storage"
    after = client.submit("selftest", {"steps": 1})
    assert client.wait(after, timeout_s=30).body.meta["steps"] == 1  # the server goes on
    client.attach(first)
    assert client.wait(first, timeout_s=30).body.meta == meta  # earlier results intact
    assert not (jobs / ("b" * 32)).exists() and not (jobs / big / "result").exists()
    assert not [p for p in jobs.rglob("*") if p.name.startswith((".new-", ".result-")) or ".tmp-" in p.name]


def test_disk_full(tmp_path, make_server, make_client, zmq_context):
    """A 2 MiB tmpfs when we may mount; else a `serve` process whose files may not grow past 1 MiB (RLIMIT_FSIZE)."""
    with small_disk(tmp_path / "small") as mounted:
        if mounted:
            jobs = tmp_path / "small" / "jobs"
            server = make_server(jobs_dir=jobs)
            _fill_disk_checks(make_client(server.endpoint, timeout_s=10), jobs, 3 << 20)
            return
    limit = 1 << 20
    endpoint, jobs = free_endpoint(), tmp_path / "jobs"
    server = ServeProcess(endpoint, jobs, tmp_path / "serve.log",
                          preexec=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    try:
        _fill_disk_checks(Client(endpoint, context=zmq_context, timeout_s=10), jobs, 2 * limit)
    finally:
        server.stop()


class Misbehaving(SelftestRunner):
    """A runner with bugs: a huge exception message with NUL characters, a result that is not JSON."""

    def run(self, params, inputs, ctx):
        if params.fail_at == 0:
            raise ValueError("\x00boom " * 5000)
        if params.fail_at == 1:
            return JobResult({"loss": float("nan")}, [Artifact("x.bin", "application/octet-stream", b"1")])
        return super().run(params, inputs, ctx)


def test_runner_bugs_fail_their_job_with_a_readable_error(make_server, make_client):
    server = make_server({"selftest": Misbehaving()})
    client = make_client(server.endpoint)
    for fail_at, code in ((0, "job_error"), (1, "job_error")):
        job = client.submit("selftest", {"steps": 2, "fail_at": fail_at})
        with pytest.raises(ClientError) as info:
            client.wait(job, timeout_s=10)
        assert info.value.error.code == code and info.value.error.message
        assert client.request(P.Status(job)).body.state == "failed"
    ok = client.submit("selftest", {"steps": 1})
    assert client.wait(ok, timeout_s=10).body.meta["steps"] == 1


def test_a_restart_without_a_jobs_runner_fails_those_jobs_and_serves_on(make_server, make_client, tmp_path):
    jobs = tmp_path / "jobs"
    server = make_server(jobs_dir=jobs, devices=())
    client = make_client(server.endpoint)
    job = client.submit("selftest", {"steps": 1})
    client.confirm(job)
    server.stop()

    class Other(SelftestRunner):
        kind = type(SelftestRunner.kind)("other", SelftestRunner.kind.params, SelftestRunner.kind.inputs, "")

    restarted = make_server({"other": Other()}, jobs_dir=jobs)
    fresh = make_client(restarted.endpoint)
    assert fresh.request(P.Status(job)).body.state == "failed"
    nxt = fresh.submit("other", {"steps": 1})
    assert fresh.wait(nxt, timeout_s=10).body.meta["steps"] == 1


# --- load ------------------------------------------------------------------------------------------------------------

def test_exactly_once_and_round_robin_under_load(tmp_path):
    """The benchmark's load run with small counts: every result exactly once, jobs started round-robin."""
    out = load(tmp_path, n_clients=6, per_client=3)
    assert out["lost"] == 0 and out["dup"] == 0 and out["fair"], out


# --- security --------------------------------------------------------------------------------------------------------

def test_only_authorized_keys_get_in(make_server, make_client, tmp_path):
    import zmq.auth

    keys, other = tmp_path / "keys", tmp_path / "other"
    (keys / "authorized").mkdir(parents=True)
    other.mkdir()
    zmq.auth.create_certificates(str(keys), "server")
    pub, _ = zmq.auth.create_certificates(str(keys), "alice")
    os.replace(pub, keys / "authorized" / "alice.key")
    zmq.auth.create_certificates(str(other), "server")
    _, mallory = zmq.auth.create_certificates(str(other), "mallory")
    server = make_server(curve_keys=keys, devices=(), max_jobs_per_client=2)
    alice = make_client(server.endpoint, curve=CurveKeys.load(keys / "server.key", keys / "alice.key_secret"))
    intruders = [make_client(server.endpoint, curve=CurveKeys.load(keys / "server.key", mallory)),
                 make_client(server.endpoint),
                 make_client(server.endpoint, curve=CurveKeys.load(other / "server.key", keys / "alice.key_secret"))]
    for c in intruders:
        c.submit("selftest", {"steps": 1})
    time.sleep(1.0)
    assert [m.type for c in intruders for m in c.pump() if m.type != "disconnected"] == []
    assert not server.jobs  # nothing queued by strangers
    for _ in range(2):
        alice.request(P.Submit(os.urandom(16).hex(), "selftest", {"steps": 1}))
    with pytest.raises(ClientError) as info:
        alice.request(P.Submit(os.urandom(16).hex(), "selftest", {"steps": 1}))
    assert info.value.error.code == "too_many_jobs"


@pytest.mark.parametrize("job_id", ["../../etc/passwd", "/etc/passwd", "..", "a" * 31 + "/", "A" * 32,
                                    "0" * 32 + "\n", "\u0660" * 32])
def test_path_like_job_ids_never_touch_the_disk(make_server, make_client, tmp_path, job_id):
    server = make_server(jobs_dir=tmp_path / "jobs", devices=())
    client = make_client(server.endpoint)
    for body in (P.Status(job_id), P.Fetch(job_id), P.Cancel(job_id), P.Submit(job_id, "selftest", {})):
        with pytest.raises(ClientError) as info:
            client.request(body)
        assert info.value.error.code == "invalid_field" and info.value.error.field == "job"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs"] and not any((tmp_path / "jobs").iterdir())


def test_every_error_code_in_the_code_is_documented():
    """The fuzz holds replies to docs/PROTOCOL.md's code table; a new code must be added there too."""
    used = set()
    for path in list((REPO / "backend").rglob("*.py")) + list((REPO / "shared").rglob("*.py")):
        used |= set(re.findall(r'code="([a-z_]+)"', path.read_text()))
    assert used - CODES == set(), f"add these error codes to docs/PROTOCOL.md: {sorted(used - CODES)}"

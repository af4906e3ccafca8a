"""Integration tests: a real server and real clients over loopback ZeroMQ (and CURVE)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zmq

from backend.server import ConfigError, Server, ServerConfig, is_loopback
from shared import protocol as P
from shared.client import ClientError, CurveKeys
from shared.spec import SpecError


def events_until(client, predicate, timeout=10.0):
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in client.pump(timeout_s=0.05):
            seen.append(m)
            if predicate(m):
                return seen
    raise AssertionError(f"timed out; saw {[m.type for m in seen]}")


def test_round_trip_progress_and_result(make_server, make_client):
    server = make_server()
    client = make_client(server.endpoint)
    data = np.arange(1000, dtype=np.float32)
    job = client.submit("selftest", {"steps": 4, "result_bytes": 4096}, {"data": data})
    progress = []
    result = client.wait(job, timeout_s=10, on_event=lambda m: progress.append(m.body)
                         if m.type == "progress" else None)
    assert [p.step for p in progress] == [1, 2, 3, 4] and [p.seq for p in progress] == [1, 2, 3, 4]
    import hashlib

    assert result.body.meta["input_sha256"] == hashlib.sha256(data.tobytes()).hexdigest()
    blob = result.payloads["payload.bin"]
    assert len(blob.data) == 4096 and hashlib.sha256(blob.data).hexdigest() == result.body.meta["result_sha256"]


def test_cancel_stops_a_running_job_quickly(make_server, make_client):
    server = make_server()
    client = make_client(server.endpoint)
    job = client.submit("selftest", {"steps": 1000, "step_s": 0.05})
    events_until(client, lambda m: m.type == "progress")
    t0 = time.monotonic()
    client.cancel(job)
    with pytest.raises(ClientError) as info:
        client.wait(job, timeout_s=5)
    # a 1,000-step job stops within a few of its 50 ms steps (2 s: slack for a busy CI machine, not a benchmark)
    assert info.value.error.code == "cancelled" and time.monotonic() - t0 < 2.0
    assert client.request(P.GetStatus(job)).body.state == "cancelled"


def test_cancel_a_queued_job(make_server, make_client):
    server = make_server()
    client = make_client(server.endpoint)
    first = client.submit("selftest", {"steps": 40, "step_s": 0.05})
    second = client.submit("selftest", {"steps": 1})
    events_until(client, lambda m: m.type == "progress" and m.body.job == first)
    state = client.request(P.Cancel(second)).body
    assert state.state == "cancelled"
    with pytest.raises(ClientError) as info:  # the final reaches the follower: no worker ever reports this job
        client.wait(second, timeout_s=5)
    assert info.value.error.code == "cancelled"
    client.cancel(first)


def test_errors_in_a_job_fail_only_that_job(make_server, make_client):
    server = make_server()
    client = make_client(server.endpoint)
    bad = client.submit("selftest", {"steps": 3, "fail_at": 1})
    oom = client.submit("selftest", {"steps": 3, "fail_at": 0, "failure": "out_of_memory"})
    good = client.submit("selftest", {"steps": 2})
    with pytest.raises(ClientError) as info:
        client.wait(bad, timeout_s=10)
    assert info.value.error.code == "job_error" and "step 1" in info.value.error.message
    with pytest.raises(ClientError) as info:
        client.wait(oom, timeout_s=10)
    assert info.value.error.code == "out_of_memory" and info.value.error.hint
    assert client.wait(good, timeout_s=10).body.meta["steps"] == 2


def test_bad_requests_get_error_replies_and_the_server_serves_on(make_server, zmq_context):
    server = make_server()
    sock = zmq_context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(server.endpoint)
    bad = [[b"not json"], [b'{"v": 2, "type": "hello"}'], [b'{"v": 1, "type": "nope"}'],
           [b'{"v": 1, "type": "hello"}', b"extra"], [b'{"v": 1, "type": "status", "job": "../x"}'],
           P.encode(P.Submit("a" * 32, "selftest", {"steps": -1})),
           P.encode(P.Submit("b" * 32, "teleport", {})),
           P.encode(P.Submit("c" * 32, "selftest", {}), {"data": np.zeros((2, 2), np.float32)}),
           P.encode(P.GetStatus("d" * 32)),
           [b'{"v": 1, "type": "welcome"}']]
    codes = []
    for frames in bad:
        sock.send_multipart(frames)
        assert sock.poll(2000), f"no reply to {frames[0][:40]}"
        reply = P.decode(sock.recv_multipart(), P.MAX_RESULT_FRAME)
        assert reply.type == "error"
        codes.append(reply.body.code)
    assert codes == ["bad_json", "version_mismatch", "unknown_type", "frame_count", "invalid_field",
                     "invalid_field", "unknown_kind", "bad_shape", "unknown_job", "unknown_type"]
    sock.send_multipart(P.encode(P.Hello("after"), req="ok"))
    assert sock.poll(2000)
    assert P.decode(sock.recv_multipart()).type == "welcome"
    sock.close()


def test_oversize_frame_disconnects_that_peer_only(make_server, make_client, zmq_context):
    server = make_server(max_frame=1024)
    sock = zmq_context.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(server.endpoint)
    sock.send_multipart(P.encode(P.Submit("e" * 32, "selftest", {}), {"data": np.zeros(100_000, np.uint8)}))
    assert not sock.poll(500)  # dropped by libzmq before Python allocates it
    sock.close()
    client = make_client(server.endpoint)
    assert client.ping()[0].server == "joker-head"


def test_idempotent_resubmission_and_id_conflict(make_server, make_client):
    server = make_server()
    client = make_client(server.endpoint)
    job = client.submit("selftest", {"steps": 1})
    client.wait(job, timeout_s=10)
    again = client.request(P.Submit(job, "selftest", {"steps": 1}))
    assert again.body.duplicate and again.body.state == "done"
    with pytest.raises(ClientError) as info:
        client.request(P.Submit(job, "selftest", {"steps": 2}))
    assert info.value.error.code == "job_id_conflict"


def test_reattach_after_client_reconnect(make_server, make_client):
    server = make_server()
    first = make_client(server.endpoint)
    job = first.submit("selftest", {"steps": 6, "step_s": 0.05})
    events_until(first, lambda m: m.type == "progress" and m.body.step == 2)
    seen = first.jobs[job].last_seq
    first.close()  # e.g. Blender quit mid-job
    second = make_client(server.endpoint)
    second.attach(job, since=seen)
    steps = []
    result = second.wait(job, timeout_s=10, on_event=lambda m: steps.append(m.body.step)
                         if m.type == "progress" else None)
    assert result.body.meta["steps"] == 6 and steps and steps[0] == seen + 1 and steps[-1] == 6


@pytest.mark.slow
def test_client_resubmits_and_reattaches_across_a_server_restart(make_server, make_client, tmp_path):
    jobs_dir = tmp_path / "store"
    server = make_server(jobs_dir=jobs_dir)
    endpoint = server.endpoint
    client = make_client(endpoint, timeout_s=0.6, heartbeat_s=0.2)
    done = client.submit("selftest", {"steps": 1, "result_bytes": 100})
    client.wait(done, timeout_s=10)
    running = client.submit("selftest", {"steps": 400, "step_s": 0.02})
    events_until(client, lambda m: m.type == "progress" and m.body.job == running and m.body.step >= 3)
    server.stop()  # the job is interrupted mid-run
    lost = events_until(client, lambda m: m.type == "disconnected", timeout=5)
    assert lost[-1].body.reason
    restarted = make_server(jobs_dir=jobs_dir, bind=endpoint)  # selftest is resumable: it is re-queued
    result = client.wait(running, timeout_s=30)
    assert result.body.meta["resumed_from"] >= 3
    fresh = make_client(restarted.endpoint)
    fresh.attach(done)
    assert fresh.wait(done, timeout_s=10).body.meta["steps"] == 1  # finished results survive restarts


def test_non_resumable_interrupted_job_is_reported_and_can_be_rerun(make_server, make_client, tmp_path):
    from backend.jobs.selftest import SelftestRunner

    class Once(SelftestRunner):
        resumable = False

    jobs_dir = tmp_path / "store"
    server = make_server({"selftest": Once()}, jobs_dir=jobs_dir)
    client = make_client(server.endpoint)
    job = client.submit("selftest", {"steps": 400, "step_s": 0.02})
    events_until(client, lambda m: m.type == "progress")
    server.stop()
    restarted = make_server({"selftest": Once()}, jobs_dir=jobs_dir)
    other = make_client(restarted.endpoint)
    state = other.request(P.GetStatus(job)).body
    assert state.state == "interrupted" and "stopped" in state.error
    again = other.request(P.Submit(job, "selftest", {"steps": 400, "step_s": 0.02})).body
    assert again.duplicate and again.state == "queued"
    other.cancel(job)


def test_results_are_written_atomically(make_server, make_client, tmp_path):
    server = make_server(jobs_dir=tmp_path / "s")
    client = make_client(server.endpoint)
    job = client.submit("selftest", {"steps": 1, "result_bytes": 10})
    client.wait(job, timeout_s=10)
    job_dir = tmp_path / "s" / job
    assert json.loads((job_dir / "state.json").read_text())["state"] == "done"
    assert not [p for p in job_dir.rglob("*") if ".tmp-" in p.name or p.name.startswith(".result-")]


def test_fair_order_across_clients(make_server, make_client):
    server = make_server()
    a, b = make_client(server.endpoint), make_client(server.endpoint)
    blocker = a.submit("selftest", {"steps": 5, "step_s": 0.05})
    events_until(a, lambda m: m.type == "progress")
    a_jobs = [a.submit("selftest", {"steps": 1}) for _ in range(3)]
    time.sleep(0.1)
    b_job = b.submit("selftest", {"steps": 1})
    time.sleep(0.1)
    assert server.queue.order() == [a_jobs[0], b_job, a_jobs[1], a_jobs[2]]
    for j in [blocker] + a_jobs:
        a.wait(j, timeout_s=10)


def test_per_client_job_limit(make_server, make_client):
    server = make_server(max_jobs_per_client=2)
    client = make_client(server.endpoint)
    jobs = [client.submit("selftest", {"steps": 100, "step_s": 0.02}) for _ in range(2)]
    with pytest.raises(ClientError) as info:
        client.request(P.Submit("f" * 32, "selftest", {"steps": 1}))
    assert info.value.error.code == "too_many_jobs"
    for j in jobs:
        client.cancel(j)


def test_non_loopback_bind_without_keys_is_refused(tmp_path):
    assert is_loopback("tcp://127.0.0.1:5555") and is_loopback("ipc:///tmp/x") and is_loopback("tcp://[::1]:1")
    assert not is_loopback("tcp://*:5555") and not is_loopback("tcp://0.0.0.0:5555")
    with pytest.raises(ConfigError, match="--curve-keys"):
        Server(ServerConfig(bind="tcp://0.0.0.0:0", jobs_dir=tmp_path), {})


def test_curve_accepts_authorized_keys_and_rejects_others(make_server, make_client, tmp_path):
    from backend.cli import main

    keys = tmp_path / "keys"
    assert main(["keys", "--dir", str(keys), "server"]) == 0
    assert main(["keys", "--dir", str(keys), "client", "alice"]) == 0
    stranger = tmp_path / "stranger"
    assert main(["keys", "--dir", str(stranger), "client", "mallory"]) == 0
    server = make_server(curve_keys=keys)
    alice = make_client(server.endpoint, curve=CurveKeys.load(keys / "server.key", keys / "alice.key_secret"))
    job = alice.submit("selftest", {"steps": 1})
    assert alice.wait(job, timeout_s=10).body.meta["steps"] == 1
    mallory = make_client(server.endpoint, timeout_s=0.5,
                          curve=CurveKeys.load(keys / "server.key", stranger / "mallory.key_secret"))
    with pytest.raises(TimeoutError):
        mallory.ping()
    plain = make_client(server.endpoint, timeout_s=0.5)
    with pytest.raises(TimeoutError):
        plain.ping()


def test_inputs_past_the_servers_limits_fail_in_the_client_with_the_limit_named(make_server, make_client):
    """The server drops a connection that sends an oversize frame without a word (MAXMSGSIZE), so the client
    checks the limits its welcome states: before the welcome as an error event, after it at once."""
    server = make_server(max_frame=16384, max_request=6000)
    early = make_client(server.endpoint)
    huge = np.zeros(8192, np.float32)  # 32 KiB
    job = early.submit("selftest", {"steps": 1}, {"data": huge})  # sent before the welcome came
    err = events_until(early, lambda m: m.type == "error")[-1].body
    assert err.job == job and err.code == "frame_too_large" and err.field == "inputs.data" and "16384" in err.expected
    ok = early.submit("selftest", {"steps": 1})  # the connection serves on
    assert early.wait(ok, timeout_s=10).type == "result"
    with pytest.raises(SpecError, match="inputs.data: expected at most 16384 bytes, received 32768 bytes"):
        early.submit("selftest", {"steps": 1}, {"data": huge})
    with pytest.raises(SpecError, match="inputs: expected at most 6000 bytes together, received 8192 bytes"):
        early.submit("selftest", {"steps": 1}, {"data": np.zeros(2048, np.float32)})

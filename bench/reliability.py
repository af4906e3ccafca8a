"""Reliability and security of the job server under hostile input, faults and load — with figures.

Everything runs against the real server on loopback with the ``selftest`` job kind; see docs/RELIABILITY.md.
    fuzz      hostile messages (hypothesis cases + seeded mutants of them) on one connection, judged against
              docs/PROTOCOL.md; oversize frames and requests; a fetch flood; server RSS sampled throughout
    faults    `joker-head serve` killed with SIGKILL mid-job and restarted (and a kill -9 torture loop); a client
              process killed mid-job; a jobs dir on a 2 MiB tmpfs; a job raising / running out of memory
    load      (testkit/load.py) 20 concurrent clients x 3 jobs (some reconnecting mid-run): exactly once,
              round-robin order, waits
    security  CURVE: unknown keys, plaintext, a wrong server key; public binds without keys; per-client limits;
              no unpickling or unchecked paths in the network-facing modules
    soak      (testkit/soak.py) 100,000 (full: 1,000,000) hostile messages from 4 processes with reconnect churn while
              a real job runs: server RSS at start, peak and end; every well-formed request answered
Last line:
    reliability: fuzz_cases=… crashes=… hangs=… lost_results=… dup_results=… unauth_accepted=… recover_s=…
                 soak_messages=… rss_growth_mib=… rss_peak_mib=… unanswered=… job_ok=…
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import zmq  # noqa: E402

from backend.jobs.selftest import SelftestRunner  # noqa: E402
from backend.server import ConfigError, Server, ServerConfig  # noqa: E402
from shared import protocol as P  # noqa: E402
from shared.client import Client, ClientError, CurveKeys, Disconnected  # noqa: E402
from testkit.audit import unsafe_calls  # noqa: E402
from testkit.hostile import (Case, documented_codes, followups, hypothesis_cases, judge,  # noqa: E402
                             judge_followup, mutate, with_req)
from testkit.load import load  # noqa: E402
from testkit.serve import ENV, Inbox, ServeProcess, free_endpoint, is_final, small_disk  # noqa: E402
from testkit.soak import soak  # noqa: E402

RSS = psutil.Process()


def mib(n: float) -> float:
    return round(n / 2**20, 1)


# === 1. hostile input ================================================================================================

class Fuzzer:
    """Sends cases on one DEALER in batches; replies come back in order, one per request."""

    def __init__(self, ctx: zmq.Context, endpoint: str, codes: set[str]):
        self.ctx, self.endpoint, self.codes = ctx, endpoint, codes
        self.sent = self.hangs = self.internal = 0
        self.failures: list[str] = []
        self.sock = self._socket()

    def _socket(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(self.endpoint)
        return sock

    def batch(self, cases: list[Case], timeout: float = 10.0) -> None:
        expected = []
        for case in cases:
            expected.append(with_req(case, f"f{self.sent}"))
            self.sock.send_multipart(case.frames)
            self.sent += 1
        deadline = time.monotonic() + timeout
        for i, (case, req) in enumerate(zip(cases, expected)):
            if not self.sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                self.hangs += len(cases) - i
                self.failures.append(f"no reply to {case.category}: {case.frames[0][:80]!r}")
                self.sock.close(0)
                self.sock = self._socket()  # replies of this batch may still come: never mix them up
                return
            reply = self.sock.recv_multipart()
            problem = judge(case, req, reply, self.codes)
            for _ in range(0 if problem else followups(case, reply)):
                problem = judge_followup(reply, self.sock.recv_multipart()) if self.sock.poll(5000) else "no push"
            if problem:
                self.internal += problem.startswith("internal")
                self.failures.append(f"{case.category}: {problem} <- {case.frames[0][:80]!r}")
                self.sock.close(0)
                self.sock = self._socket()  # resynchronise: later replies must not be judged against this one
                return


def fuzz(n_cases: int, seed_value: int, tmp: Path) -> dict:
    """Hostile messages against an in-process server without workers (jobs stay queued: every reply is direct)."""
    ctx = zmq.Context()
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", jobs_dir=tmp / "fuzz-jobs", devices=(),
                                 max_frame=4 << 20, max_request=8 << 20, peer_msgs_per_s=0),  # judged: every reply
                    {"selftest": SelftestRunner()}, context=ctx).start()
    fuzzer = Fuzzer(ctx, server.endpoint, documented_codes())
    t0 = time.perf_counter()
    seeds = hypothesis_cases(max(200, n_cases // 8), seed_value)
    t_gen = time.perf_counter() - t0
    rng = random.Random(seed_value)
    stream = seeds + [mutate(rng, rng.choice(seeds), rng.choice(seeds)) for _ in range(n_cases - len(seeds))]
    rss0 = peak = RSS.memory_info().rss  # after generating: what grows from here is the server (and sockets)
    t0 = time.perf_counter()
    for i in range(0, len(stream), 64):
        fuzzer.batch(stream[i:i + 64])
        peak = max(peak, RSS.memory_info().rss)
        if i // 64 == len(stream) // 128:
            rss_half = RSS.memory_info().rss
    t_fuzz = time.perf_counter() - t0
    stray = [p.name for p in (tmp / "fuzz-jobs").iterdir() if not re.fullmatch(P.JOB_ID, p.name)]
    stray += [str(p) for p in tmp.rglob("*") if p.name in ("passwd", "system32", "x") or ".." in p.name]
    oversize = oversize_frames(ctx, server.endpoint)
    alive = all(t.is_alive() for t in server._threads)
    crashes = fuzzer.internal + server.stats["internal_errors"] + (0 if alive else 1)
    rss1 = RSS.memory_info().rss
    server.stop()
    ctx.destroy(0)
    print(f"fuzz: {fuzzer.sent} hostile messages ({len(seeds)} hypothesis cases in {t_gen:.1f} s, "
          f"{fuzzer.sent - len(seeds)} mutants; sent and judged in {t_fuzz:.1f} s = "
          f"{fuzzer.sent / max(t_fuzz, 1e-9):.0f}/s); wrong replies {len(fuzzer.failures)}, hangs {fuzzer.hangs}, "
          f"internal errors {crashes}, serve/worker threads alive {alive}")
    for f in fuzzer.failures[:10]:
        print("  !", f)
    print(f"fuzz: oversize frames/requests: {oversize}; paths outside job folders: {stray or 'none'}")
    print(f"fuzz: process RSS {mib(rss0)} MiB before sending -> {mib(rss_half)} MiB half way -> peak {mib(peak)} "
          f"MiB -> {mib(rss1)} MiB after (growth over the second half {mib(rss1 - rss_half)} MiB)")
    return {"cases": fuzzer.sent + oversize["sent"], "crashes": crashes,
            "hangs": fuzzer.hangs + oversize["unanswered_requests"], "wrong": len(fuzzer.failures) + len(stray),
            "rss_growth_mib": mib(peak - rss0), "rss_second_half_mib": mib(rss1 - rss_half)}


def oversize_frames(ctx: zmq.Context, endpoint: str) -> dict:
    """Frames over max_frame: libzmq drops the peer unanswered (the protocol's rule); over max_request: an error."""
    dropped = answered_too_large = 0
    big = P.encode(P.Submit("e" * 32, "selftest", {}), {"data": np.zeros(5 << 20, np.uint8)})  # 5 MiB > 4 MiB
    parts = P.encode(P.Submit("e" * 32, "selftest", {}),
                     {f"d{i}": np.zeros(3 << 20, np.uint8) for i in range(3)}, req="too-large")  # 9 MiB > 8 MiB
    for frames, expect_reply in [(big, False)] * 5 + [(parts, True)] * 5:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(endpoint)
        sock.send_multipart(frames, copy=False)
        got = sock.poll(300 if not expect_reply else 5000)
        if not expect_reply:
            dropped += not got
        elif got:
            reply = P.decode(sock.recv_multipart(), P.MAX_RESULT_FRAME)
            answered_too_large += reply.body.code == "request_too_large" and reply.req == "too-large"
        sock.close(0)
    ping = Client(endpoint, context=ctx, timeout_s=5)
    still_serving = ping.ping()[1] < 5
    ping.close()
    return {"sent": 10, "dropped_oversize": dropped, "request_too_large": answered_too_large,
            "unanswered_requests": 5 - answered_too_large, "still_serving": still_serving}


def fetch_flood(tmp: Path, fetches: int) -> dict:
    """A client that asks for an 8 MiB result over and over and never reads: server memory must not pile up."""
    ctx = zmq.Context()
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", jobs_dir=tmp / "flood-jobs"),
                    {"selftest": SelftestRunner()}, context=ctx).start()
    client = Client(server.endpoint, context=ctx, timeout_s=30)
    job = client.submit("selftest", {"steps": 1, "result_bytes": 8 << 20})
    client.wait(job, timeout_s=60)
    rss0 = RSS.memory_info().rss
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.connect(server.endpoint)
    for i in range(fetches):
        sock.send_multipart(P.encode(P.Fetch(job), req=str(i)))
    time.sleep(1.0)
    grown = RSS.memory_info().rss - rss0
    sock.close(0)
    client.close()
    server.stop()
    ctx.destroy(0)
    print(f"fuzz: fetch flood: {fetches} fetches of an 8 MiB result by a client that never reads: server RSS "
          f"+{mib(grown)} MiB (one shared copy; unshared it would be {fetches * 8} MiB)")
    return {"flood_rss_mib": mib(grown)}


def client_fuzz(n: int, seed_value: int) -> dict:
    """A hostile server: mutants of every reply type sent to a real Client, whose pump() must never raise; a
    result sent five times reaches the caller once."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    client = Client(f"tcp://127.0.0.1:{router.bind_to_random_port('tcp://127.0.0.1')}", context=ctx, timeout_s=60)
    job = client.submit("selftest", {"steps": 1})
    router.poll(5000)
    identity = router.recv_multipart()[0]
    result = P.encode(P.Result(job, {"steps": 1}), {"payload.bin": P.Blob(b"x" * 100)})
    seeds = [Case("reply", P.encode(body, payloads)) for body, payloads in [
        (P.Welcome("x", ("selftest",)), None), (P.Accepted(job), None), (P.Heartbeat(), None),
        (P.Progress(job, seq=3, stage="s", step=1, total=2, metrics={"loss": 0.5}), {"preview": P.Png(b"\x89PNG")}),
        (P.JobState(job, "selftest", "running"), None), (P.JobList((P.JobState(job),)), None),
        (P.Error("bad", "m", "f", job=job), None)]] + [Case("reply", result)]
    rng, crashes, events = random.Random(seed_value), 0, []
    for i in range(n):
        case = mutate(rng, rng.choice(seeds), rng.choice(seeds))
        router.send_multipart([identity] + case.frames)
        if i % 50 == 49 or i == n - 1:
            try:
                while len(got := client.pump(timeout_s=0.05, max_events=10_000)):
                    events += got
            except Exception as e:  # noqa: BLE001 — what we count
                crashes += 1
                print("  ! client pump raised", type(e).__name__, e)
    fresh = "f" * 32  # the mutants above may have finished ``job`` already (an error is final)
    client.attach(fresh)
    for _ in range(5):
        router.send_multipart([identity] + P.encode(P.Result(fresh, {"steps": 1}), {"payload.bin": P.Blob(b"x")}))
    time.sleep(0.3)
    delivered = sum(1 for m in client.pump(timeout_s=0.1, max_events=10_000)
                    if m.type == "result" and m.body.job == fresh)
    bad = sum(1 for m in events if m.type == "error" and m.body.code == "bad_reply")
    client.close()
    ctx.destroy(0)
    print(f"fuzz: hostile server: {n} mutated replies -> client exceptions {crashes}, {len(events)} events "
          f"({bad} reported as bad_reply); a result sent 5 times reached the caller {delivered} time(s)")
    return {"cases": n, "crashes": crashes, "dup": max(0, delivered - 1), "lost": 1 if delivered == 0 else 0}


# === 2. faults =======================================================================================================

def result_ok(msg: P.Message) -> bool:
    data = msg.payloads["payload.bin"].data
    return hashlib.sha256(data).hexdigest() == msg.body.meta["result_sha256"]


def kill9_restart(tmp: Path, timeout_s: float = 1.5, heartbeat_s: float = 0.3) -> dict:
    """SIGKILL the server mid-job: the client reports the loss; a restart resumes the job and keeps every result."""
    endpoint, jobs = free_endpoint(), tmp / "kill9-jobs"
    server = ServeProcess(endpoint, jobs, tmp / "kill9.log")
    ctx = zmq.Context()
    client = Client(endpoint, context=ctx, timeout_s=timeout_s, heartbeat_s=heartbeat_s)
    finished = [client.submit("selftest", {"steps": 2, "result_bytes": 256 << 10}) for _ in range(3)]
    digests = {j: client.wait(j, timeout_s=30).body.meta["result_sha256"] for j in finished}
    running = client.submit("selftest", {"steps": 200, "step_s": 0.02, "result_bytes": 1 << 20})
    queued = client.submit("selftest", {"steps": 2})
    inbox = Inbox(client)
    inbox.wait(lambda m: m.type == "progress" and m.body.job == running and m.body.step >= 10, 30)
    t_kill = time.monotonic()
    server.kill9()
    lost = inbox.wait(lambda m: isinstance(m.body, Disconnected), 30)
    loss_s = time.monotonic() - t_kill if lost else float("inf")
    t_restart = time.monotonic()
    server = ServeProcess(endpoint, jobs, tmp / "kill9.log")
    before = client.jobs[running].last_seq
    resumed = inbox.wait(lambda m: m.type == "progress" and m.body.job == running and m.body.seq > before, 30)
    recover_s = time.monotonic() - t_restart if resumed else float("inf")
    results = {running: inbox.wait(is_final(running), 60), queued: inbox.wait(is_final(queued), 30)}
    inbox.wait(lambda m: False, 0.5)  # a duplicate would arrive now
    delivered = sum(1 for m in inbox.events if m.type == "result" and m.body.job in results)
    fresh = Client(endpoint, context=ctx, timeout_s=10)
    intact = 0
    for j in finished:
        fresh.attach(j)
        msg = fresh.wait(j, timeout_s=30)
        intact += result_ok(msg) and msg.body.meta["result_sha256"] == digests[j]
    res = results[running]
    out = {"loss_s": round(loss_s, 2), "timeout_s": timeout_s, "recover_s": round(recover_s, 2),
           "resumed_from": res.body.meta["resumed_from"] if res is not None and res.type == "result" else None,
           "finished_intact": f"{intact}/{len(finished)}",
           "lost": sum(1 for m in results.values() if m is None or m.type != "result") + len(finished) - intact,
           "dup": max(0, delivered - len(results))}
    fresh.close()
    client.close()
    server.stop()
    ctx.destroy(0)
    print(f"faults: kill -9 mid-job: client reported the loss after {out['loss_s']} s (timeout {timeout_s} s, "
          f"heartbeat {heartbeat_s} s); restart -> job resumed at step {out['resumed_from']}, first resumed progress "
          f"{out['recover_s']} s after the restart; finished results intact {out['finished_intact']}; "
          f"lost {out['lost']}, duplicated {out['dup']}")
    return out


def crash_loop(tmp: Path, cycles: int) -> dict:
    """kill -9 at random moments while 4 MiB results are written; after each restart every done job must be whole."""
    endpoint, jobs = free_endpoint(), tmp / "loop-jobs"
    rng, ctx = random.Random(7), zmq.Context()
    submitted: list[str] = []
    broken = 0
    for cycle in range(cycles):
        server = ServeProcess(endpoint, jobs, tmp / "loop.log")
        client = Client(endpoint, context=ctx, timeout_s=10)
        new = [client.submit("selftest", {"steps": 3, "step_s": 0.01, "result_bytes": 4 << 20}) for _ in range(3)]
        for j in new:
            client.confirm(j)  # once accepted, a job must survive any crash
        submitted += new
        time.sleep(rng.uniform(0.05, 0.6))
        server.kill9()
        client.close()
        broken += sum(1 for d in jobs.iterdir() if d.is_dir() and not _job_dir_consistent(d))
    server = ServeProcess(endpoint, jobs, tmp / "loop.log")
    client = Client(endpoint, context=ctx, timeout_s=10)
    inbox = Inbox(client)
    for j in submitted:
        client.attach(j)
    ok, why = 0, []
    for j in submitted:
        msg = inbox.wait(is_final(j), 60)
        ok += msg is not None and msg.type == "result" and result_ok(msg)
        why += [] if msg is not None and msg.type == "result" else [msg.body.code if msg else "timeout"]
    leftovers = [p.name for p in jobs.rglob("*") if p.name.startswith((".new-", ".result-")) or ".tmp-" in p.name]
    client.close()
    server.stop()
    ctx.destroy(0)
    print(f"faults: {cycles} kill -9 cycles during result writes: {ok}/{len(submitted)} jobs finished whole after "
          f"restarts {why or ''}, {broken} inconsistent job folders seen between crashes, leftovers after restart "
          f"{leftovers or 'none'}")
    return {"lost": len(submitted) - ok, "corrupt": broken + len(leftovers)}


def _job_dir_consistent(d: Path) -> bool:
    """A job folder after a crash: state.json readable; a result folder, if any, complete and matching its meta."""
    try:
        json.loads((d / "state.json").read_text())
        if (d / "result").exists():
            listing = json.loads((d / "result" / "meta.json").read_text())
            data = (d / "result" / "payload.bin").read_bytes()
            return hashlib.sha256(data).hexdigest() == listing["meta"]["result_sha256"]
        return True
    except (OSError, ValueError, KeyError):
        return False


def kill_client(tmp: Path) -> dict:
    """SIGKILL a `joker-head submit --wait` process mid-job: the job finishes and is fetchable later."""
    endpoint = free_endpoint()
    server = ServeProcess(endpoint, tmp / "client-jobs", tmp / "client.log")
    proc = subprocess.Popen([sys.executable, "-m", "backend.cli", "submit", "selftest", "--server", endpoint,
                             "--params", json.dumps({"steps": 30, "step_s": 0.03, "result_bytes": 4096}), "--wait",
                             "--out", str(tmp / "client-out")], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    job = proc.stdout.readline().strip()
    for _ in range(100):  # until the first progress line (bounded: a dead process reads "")
        if "[selftest]" in proc.stdout.readline():
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    ctx = zmq.Context()
    later = Client(endpoint, context=ctx, timeout_s=10)
    later.attach(job)
    msg = later.wait(job, timeout_s=30)
    ok = msg.body.meta["steps"] == 30 and result_ok(msg)
    later.close()
    server.stop()
    ctx.destroy(0)
    print(f"faults: client killed mid-job: the job finished and was fetched later: {ok}")
    return {"lost": 0 if ok else 1}


def disk_full(tmp: Path) -> dict:
    """The jobs dir runs out of space: clear errors, no half-written job, earlier results intact, recovery.

    A 2 MiB tmpfs where we may mount (root); else a `serve` process whose files may not grow past 1 MiB
    (RLIMIT_FSIZE: writes fail with EFBIG instead of ENOSPC, through the same code paths)."""
    ctx = zmq.Context()
    with small_disk(tmp / "small") as mounted:
        if mounted:
            jobs = tmp / "small" / "jobs"
            server = Server(ServerConfig(bind="tcp://127.0.0.1:*", jobs_dir=jobs), {"selftest": SelftestRunner()},
                            context=ctx).start()
            endpoint, how = server.endpoint, "2 MiB tmpfs"
        else:
            jobs, endpoint, how = tmp / "fsize-jobs", free_endpoint(), "RLIMIT_FSIZE 1 MiB"
            server = ServeProcess(endpoint, jobs, tmp / "fsize.log", preexec=lambda: resource.setrlimit(
                resource.RLIMIT_FSIZE, (1 << 20, 1 << 20)))
        client = Client(endpoint, context=ctx, timeout_s=10)
        checks = _disk_checks(client, jobs, 3 << 20, tmp / "small" / "ballast" if mounted else None)
        client.close()
        server.stop()
    ctx.destroy(0)
    print(f"faults: disk full ({how}): " + ", ".join(f"{k}: {v}" for k, v in checks.items()))
    return {"ok": all(checks.values()), "corrupt": sum(not v for v in checks.values())}


def _disk_checks(client: Client, jobs: Path, too_big: int, ballast: Optional[Path]) -> dict:
    first = client.submit("selftest", {"steps": 1, "result_bytes": 200 << 10})
    checks = {"first result": result_ok(client.wait(first, timeout_s=30))}
    big = client.submit("selftest", {"steps": 1, "result_bytes": too_big})
    try:
        client.wait(big, timeout_s=30)
        checks["result too big -> storage error"] = False
    except ClientError as e:
        checks["result too big -> storage error"] = e.error.code == "storage" and "disk" in e.error.message
    try:
        client.request(P.Submit("b" * 32, "selftest", {}), {"data": np.ones(too_big, np.uint8)})
        checks["input too big -> storage error"] = False
    except ClientError as e:
        checks["input too big -> storage error"] = e.error.code == "storage" and bool(e.error.hint)
    if ballast is not None:  # a completely full disk: even a small job cannot be stored
        with contextlib.suppress(OSError), open(ballast, "wb") as f:
            while True:
                f.write(bytes(64 << 10))
        try:
            client.request(P.Submit("c" * 32, "selftest", {"steps": 1}))
            checks["full disk -> storage error"] = False
        except ClientError as e:
            checks["full disk -> storage error"] = e.error.code == "storage"
        ballast.unlink()
    again = client.submit("selftest", {"steps": 1, "result_bytes": 1024})
    checks["space freed -> jobs run"] = result_ok(client.wait(again, timeout_s=30))
    client.attach(first)
    checks["earlier result intact"] = result_ok(client.wait(first, timeout_s=30))
    leftovers = [p.name for p in jobs.rglob("*") if p.name.startswith((".new-", ".result-")) or ".tmp-" in p.name]
    checks["no half-written files"] = not leftovers and not (jobs / ("b" * 32)).exists()
    checks["failed job has no result"] = not (jobs / big / "result").exists()
    return checks


def failing_jobs(tmp: Path) -> dict:
    """An exception and a simulated CUDA out-of-memory fail their own jobs only; the next job runs."""
    ctx = zmq.Context()
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", jobs_dir=tmp / "fail-jobs"), {"selftest": SelftestRunner()},
                    context=ctx).start()
    client = Client(server.endpoint, context=ctx, timeout_s=10)
    codes = []
    for params in ({"steps": 3, "fail_at": 1}, {"steps": 3, "fail_at": 0, "failure": "out_of_memory"}):
        job = client.submit("selftest", params)
        try:
            client.wait(job, timeout_s=30)
            codes.append("done?!")
        except ClientError as e:
            codes.append(f"{e.error.code}: {e.error.message}")
    nxt = client.submit("selftest", {"steps": 2})
    next_ok = result_ok(client.wait(nxt, timeout_s=30))
    client.close()
    server.stop()
    ctx.destroy(0)
    ok = codes[0].startswith("job_error") and codes[1].startswith("out_of_memory") and next_ok
    print(f"faults: failing jobs -> {codes}; next job ran: {next_ok}")
    return {"ok": ok}


# === 3. load =========================================================================================================

# === 4. security =====================================================================================================

def security(tmp: Path, attempts: int) -> dict:
    import zmq.auth

    keys, strangers = tmp / "keys", tmp / "strangers"
    for d in (keys / "authorized", strangers):
        d.mkdir(parents=True, exist_ok=True)
    zmq.auth.create_certificates(str(keys), "server")
    pub, _ = zmq.auth.create_certificates(str(keys), "alice")
    Path(pub).rename(keys / "authorized" / "alice.key")
    zmq.auth.create_certificates(str(strangers), "server")
    ctx = zmq.Context()
    config = ServerConfig(bind="tcp://127.0.0.1:*", jobs_dir=tmp / "sec-jobs", curve_keys=keys, max_jobs_per_client=3,
                          devices=())
    server = Server(config, {"selftest": SelftestRunner()}, context=ctx).start()
    alice = Client(server.endpoint, context=ctx, timeout_s=5,
                   curve=CurveKeys.load(keys / "server.key", keys / "alice.key_secret"))
    authorized_ok = alice.ping()[0].server == "joker-head"
    intruders = []
    for i in range(attempts):
        pub, secret = zmq.auth.create_certificates(str(strangers), f"mallory{i}")
        intruders.append(Client(server.endpoint, context=ctx, curve=CurveKeys.load(keys / "server.key", secret)))
        intruders.append(Client(server.endpoint, context=ctx))  # plaintext
        intruders.append(Client(server.endpoint, context=ctx,  # right client key, forged server key
                                curve=CurveKeys.load(strangers / "server.key", keys / "alice.key_secret")))
    for c in intruders:
        c.submit("selftest", {"steps": 1})
    time.sleep(1.5)
    accepted = sum(1 for c in intruders for m in c.pump() if m.type not in ("disconnected",))
    limit_codes = []
    for _ in range(4):
        try:
            alice.request(P.Submit(os.urandom(16).hex(), "selftest", {"steps": 1}))
        except ClientError as e:
            limit_codes.append(e.error.code)
    alice_id = "key:" + zmq.auth.load_certificate(keys / "authorized" / "alice.key")[0].decode()
    queued_by_intruders = sum(1 for j in server.jobs.values() if j.record.client != alice_id)
    for c in intruders + [alice]:
        c.close()
    server.stop()
    ctx.destroy(0)
    refused = 0
    public = ["tcp://0.0.0.0:0", "tcp://*:0", "tcp://[::]:0", "tcp://eth0:0", "tcp://192.0.2.1:0",
              "tcp://example.com:0"]
    for bind in public:
        try:
            Server(ServerConfig(bind=bind, jobs_dir=tmp / "refused"), {})
        except ConfigError:
            refused += 1
    unsafe = unsafe_calls()
    out = {"unauth_accepted": accepted + queued_by_intruders, "authorized_ok": authorized_ok,
           "public_binds_refused": f"{refused}/{len(public)}", "job_limit": limit_codes == ["too_many_jobs"],
           "unsafe_calls": unsafe}
    print(f"security: {len(intruders)} unauthorized clients ({attempts} unknown keys, {attempts} plaintext, "
          f"{attempts} forged server key): replies/jobs {out['unauth_accepted']}; authorized client served "
          f"{authorized_ok}; public binds without keys refused {out['public_binds_refused']}; 4th job over a limit "
          f"of 3 -> {limit_codes}; unpickling/eval/unchecked np.load in network code: {unsafe or 'none'}")
    return out


# === main ============================================================================================================

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the short run (under a minute)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--soak", type=int, default=0, help="hostile messages in the soak (default 100,000 with "
                        "--quick, else 1,000,000)")
    args = parser.parse_args()
    logging.getLogger("joker_head").setLevel(logging.CRITICAL)  # failing jobs are expected here; bugs are counted
    n_fuzz, cycles, attempts, flood = (10_000, 2, 5, 50) if args.quick else (50_000, 6, 20, 200)
    n_soak = args.soak or (100_000 if args.quick else 1_000_000)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        fz = fuzz(n_fuzz, args.seed, tmp)
        cf = client_fuzz(n_fuzz // 5, args.seed)
        fl = fetch_flood(tmp, flood)
        k9 = kill9_restart(tmp)
        cl = crash_loop(tmp, cycles)
        kc = kill_client(tmp)
        df = disk_full(tmp)
        fj = failing_jobs(tmp)
        ld = load(tmp, 20, 3)
        sec = security(tmp, attempts)
        sk = soak(tmp, n_soak, seed_value=args.seed)
    lost = k9["lost"] + cl["lost"] + kc["lost"] + ld["lost"] + cf["lost"]
    dup = k9["dup"] + ld["dup"] + cf["dup"]
    print(f"checks: fuzz wrong replies {fz['wrong']}, memory +{fz['rss_growth_mib']} MiB, flood +{fl['flood_rss_mib']} "
          f"MiB; corrupt jobs {cl['corrupt'] + df['corrupt']}; disk full ok {df['ok']}; failing jobs ok {fj['ok']}; "
          f"fair {ld['fair']}; total {time.perf_counter() - t0:.0f} s")
    print(f"reliability: fuzz_cases={fz['cases'] + cf['cases']} crashes={fz['crashes'] + cf['crashes']} "
          f"hangs={fz['hangs']} lost_results={lost} "
          f"dup_results={dup} unauth_accepted={sec['unauth_accepted']} recover_s={k9['recover_s']} "
          f"soak_messages={sk['messages']} rss_growth_mib={sk['growth_mib']} rss_peak_mib={sk['peak_mib']} "
          f"unanswered={sk['asked'] - sk['answered']} job_ok={sk['job_running'] and sk['ordered']}")


if __name__ == "__main__":
    main()

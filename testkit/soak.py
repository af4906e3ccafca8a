"""The soak part of bench/reliability.py: the server's memory under a long stream of bad input, while a job runs.

Several sender processes (spawned, so their memory is not the server's) send hostile messages of every class
testkit/hostile.py knows: hypothesis cases and their libFuzzer-style mutants (never a valid submission: that would be
a job, not bad input) and, one message in four, a 10-60 KiB header of one of the :data:`BIG_HEADERS` classes.
Every sender reconnects with a new routing id every ``churn`` messages (so the server meets tens of thousands of
peers, and each connection outlasts its message budget: some replies are ``rate_limited``); one sender in four
never reads its replies. Meanwhile, in this process, an artist's client runs a real ``selftest`` job and asks for
its status every 50 ms; every one of those requests must be answered, and the job must finish with every progress
step in order. The server (this process) is sampled for RSS every 0.2 s: start (after a warm-up), peak, end.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import zmq

from backend.jobs.selftest import SelftestRunner
from backend.server import Server, ServerConfig, trim_heap
from testkit.hostile import big_header, hypothesis_cases, mutate
from shared import protocol as P
from shared.client import Client, ClientError

RSS = psutil.Process()
WINDOW = 64  # messages in flight per reading sender


def _mib(n: float) -> float:
    return round(n / 2**20, 1)


def _pool(seed_value: int, n_seeds: int) -> list[list]:
    """Hostile frames to cycle through: hypothesis cases and mutants, minus anything the server would accept as a
    submission (a job is not bad input)."""
    seeds = hypothesis_cases(n_seeds, seed_value)
    rng = random.Random(seed_value)
    cases = seeds + [mutate(rng, rng.choice(seeds), rng.choice(seeds)) for _ in range(8 * n_seeds)]
    pool = []
    for case in cases:
        try:
            if P.decode(case.frames, 4 << 20, allowed=P.REQUESTS, max_total=8 << 20).type == "submit":
                continue
        except P.SpecError:
            pass
        pool.append(case.frames)
    return pool


def sender(endpoint: str, n: int, seed_value: int, churn: int, reads: bool, out: Any) -> None:
    """One hostile client process: ``n`` messages, a new connection (and routing id) every ``churn``."""
    pool = _pool(seed_value, 150)
    rng = random.Random(seed_value)
    big = [big_header(rng).frames for _ in range(300)]  # every class, sizes 10-60 KiB
    ctx = zmq.Context()
    sent = replies = connections = 0
    sock = None
    t0 = time.perf_counter()
    while sent < n:
        if sent % churn == 0:
            if sock is not None:
                sock.close(0)
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.routing_id = uuid.uuid4().bytes
            sock.connect(endpoint)
            connections += 1
        batch = min(WINDOW, n - sent, churn - sent % churn)
        for _ in range(batch):
            frames = rng.choice(big) if rng.random() < 0.25 else rng.choice(pool)
            sock.send_multipart(frames)
        sent += batch
        while reads and sock.poll(2000):  # the replies of this window (a fetch may bring pushed messages too)
            sock.recv_multipart()
            replies += 1
            if not sock.poll(0) and replies >= sent:
                break
    sock.close(0)
    ctx.destroy(0)
    out.put({"sent": sent, "replies": replies, "connections": connections, "reads": reads,
             "s": time.perf_counter() - t0})


class Artist(threading.Thread):
    """A well-behaved client: runs one real job and asks for its status every 50 ms until told to stop."""

    def __init__(self, endpoint: str, steps: int, step_s: float):
        super().__init__(daemon=True)
        self.client = Client(endpoint, timeout_s=10)
        self.client.ping()
        self.job = self.client.submit("selftest", {"steps": steps, "step_s": step_s, "result_bytes": 4096})
        self.asked = self.answered = 0
        self.latency: list[float] = []
        self.seqs: list[int] = []
        self.final: Any = None
        self.running_at_end = False
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.asked += 1
            t0 = time.perf_counter()
            try:
                self.client.request(P.GetStatus(self.job), timeout_s=5)
                self.answered += 1
                self.latency.append(time.perf_counter() - t0)
            except (TimeoutError, ClientError):  # an unanswered or refused request is what we count
                pass
            self._pump(0.05)
        self.running_at_end = self.final is None
        self.client.cancel(self.job)  # it was never meant to finish: it only had to keep running
        deadline = time.monotonic() + 10
        while self.final is None and time.monotonic() < deadline:
            self._pump(0.05)

    def _pump(self, timeout_s: float) -> None:
        for m in self.client.pump(timeout_s=timeout_s):
            if m.type == "progress" and m.body.job == self.job:
                self.seqs.append(m.body.seq)
            elif m.type in ("result", "error") and getattr(m.body, "job", None) == self.job:
                self.final = m


def soak(tmp: Path, n_messages: int, n_senders: int = 4, churn: int = 500, seed_value: int = 0) -> dict:
    """n hostile messages from ``n_senders`` processes while a real job runs; RSS at start, peak and end."""
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", jobs_dir=tmp / "soak-jobs", devices=("cpu",),
                                 max_frame=4 << 20, max_request=8 << 20), {"selftest": SelftestRunner()}).start()
    mp = multiprocessing.get_context("spawn")
    out = mp.Queue()
    warm = mp.Process(target=sender, args=(server.endpoint, 4000, seed_value + 99, churn, True, out))
    warm.start()  # first-time allocations (regex caches, hypothesis in the senders) are not growth
    warm.join()
    out.get()
    time.sleep(0.5)
    trim_heap()  # start from what the heap holds, not from what earlier parts freed but glibc kept
    rss0 = peak = RSS.memory_info().rss
    artist = Artist(server.endpoint, steps=100_000, step_s=0.02)
    artist.start()
    procs = [mp.Process(target=sender, args=(server.endpoint, n_messages // n_senders, seed_value + i, churn,
                                             i % 4 != 3, out)) for i in range(n_senders)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    samples = []
    while any(p.is_alive() for p in procs):
        rss = RSS.memory_info().rss
        peak = max(peak, rss)
        samples.append(rss)
        time.sleep(0.2)
    stats = [out.get() for _ in procs]
    for p in procs:
        p.join()
    t_soak = time.perf_counter() - t0
    time.sleep(0.5)  # the last replies leave
    rss1 = RSS.memory_info().rss
    artist.stop.set()
    artist.join(20)
    sent = sum(s["sent"] for s in stats)
    unread = sum(s["sent"] for s in stats if not s["reads"])
    replies = sum(s["replies"] for s in stats)
    seqs = artist.seqs
    ordered = seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else False
    final = artist.final.body.code if artist.final is not None and artist.final.type == "error" else "result"
    lat = sorted(artist.latency) or [float("nan")]
    result = {
        "messages": sent, "per_s": sent / t_soak, "connections": sum(s["connections"] for s in stats),
        "replies_read": replies, "read_sent": sent - unread, "rate_limited": server.stats["rate_limited"],
        "internal": server.stats["internal_errors"], "peers_tracked": len(server.limiter),
        "rss0": rss0, "peak": peak, "rss1": rss1, "growth_mib": _mib(rss1 - rss0), "peak_mib": _mib(peak - rss0),
        "asked": artist.asked, "answered": artist.answered, "p50_ms": lat[len(lat) // 2] * 1000,
        "max_ms": lat[-1] * 1000, "job_running": artist.running_at_end, "progress": len(seqs), "ordered": ordered,
        "job_end": final, "s": t_soak}
    server.stop()
    artist.client.close()
    print(f"soak: {sent} hostile messages ({n_senders} senders, {result['connections']} connections, 1 in 4 a "
          f"10-60 KiB header; {unread} from senders that never read) in {t_soak:.0f} s = {result['per_s']:.0f}/s; "
          f"{replies} replies read for {sent - unread} sent by readers; rate_limited {result['rate_limited']}; "
          f"internal errors {result['internal']}; peers tracked {result['peers_tracked']}")
    print(f"soak: server RSS start {_mib(rss0)} MiB, peak {_mib(peak)} MiB (+{result['peak_mib']}), end "
          f"{_mib(rss1)} MiB (+{result['growth_mib']})")
    print(f"soak: artist: {artist.answered}/{artist.asked} status requests answered (p50 {result['p50_ms']:.1f} ms, "
          f"max {result['max_ms']:.0f} ms); job still running at the end {result['job_running']}, "
          f"{len(seqs)} progress steps in order {ordered}, ended by the bench with {final}")
    return result

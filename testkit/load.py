"""The load run, one function for the benchmark (bench/reliability.py, 20 clients x 3 jobs) and its test (small
counts): many clients submit at once behind a running job; every result arrives exactly once, jobs start round-robin."""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path

import zmq

from backend.jobs.selftest import SelftestRunner
from backend.server import Server, ServerConfig
from shared.client import Client


def load(tmp: Path, n_clients: int, per_client: int) -> dict:
    """n clients submit at once while a blocker runs; every result exactly once, started in round-robin order."""
    ctx = zmq.Context()
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", jobs_dir=tmp / "load-jobs"), {"selftest": SelftestRunner()},
                    context=ctx).start()
    blocker_client = Client(server.endpoint, context=ctx, timeout_s=30)
    clients = [Client(server.endpoint, context=ctx, timeout_s=30) for _ in range(n_clients)]
    for c in clients:
        c.ping()
    blocker = blocker_client.submit("selftest", {"steps": 1, "step_s": 2.0})
    while server.jobs.get(blocker) is None or server.jobs[blocker].record.state != "running":
        time.sleep(0.01)
    counts: dict[str, int] = {}
    owners: dict[str, int] = {}
    lock, barrier = threading.Lock(), threading.Barrier(n_clients)

    def artist(i: int) -> None:
        c = clients[i]
        barrier.wait()
        mine = [c.submit("selftest", {"steps": 1, "result_bytes": 4096}) for _ in range(per_client)]
        with lock:
            owners.update({j: i for j in mine})
        deadline, reconnected = time.monotonic() + 120, False
        while time.monotonic() < deadline and not all(c.jobs[j].finished for j in mine):
            for m in c.pump(timeout_s=0.05):
                if m.type == "result":
                    with lock:
                        counts[m.body.job] = counts.get(m.body.job, 0) + 1
                    if i % 4 == 0 and not reconnected:  # a flaky network: reconnect and reattach mid-run
                        c.reconnect()
                        reconnected = True
        end = time.monotonic() + 0.5  # late duplicates would arrive now
        while time.monotonic() < end:
            for m in c.pump(timeout_s=0.05):
                if m.type == "result":
                    with lock:
                        counts[m.body.job] = counts.get(m.body.job, 0) + 1

    threads = [threading.Thread(target=artist, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blocker_ended_early = server.jobs[blocker].record.updated < max(server.jobs[j].record.created for j in owners)
    records = sorted((server.jobs[j].record for j in owners), key=lambda r: r.started)
    blocker_client.wait(blocker, timeout_s=30)
    for c in clients + [blocker_client]:
        c.close()
    server.stop()
    ctx.destroy(0)
    waits = [r.started - r.created for r in records if r.started]
    blocker_end = server.jobs[blocker].record.updated
    waits_after = [r.started - max(r.created, blocker_end) for r in records if r.started]
    span = max(r.updated for r in records) - min(r.started for r in records)
    order = [owners[r.job] for r in records]
    rounds = [order[k * n_clients:(k + 1) * n_clients] for k in range(per_client)]
    fair = all(sorted(r) == list(range(n_clients)) for r in rounds)
    q = statistics.quantiles(waits, n=100) if len(waits) > 1 else [0.0] * 99
    qa = statistics.quantiles(waits_after, n=100) if len(waits_after) > 1 else [0.0] * 99
    out = {"lost": sum(1 for j in owners if counts.get(j, 0) == 0),
           "dup": sum(max(0, counts.get(j, 0) - 1) for j in owners), "fair": fair and not blocker_ended_early,
           "wait_p50_s": round(q[49], 3), "wait_p99_s": round(q[98], 3),
           "wait_after_blocker_p50_s": round(qa[49], 3), "wait_after_blocker_p99_s": round(qa[98], 3),
           "jobs_per_s": round(len(records) / span, 1)}
    print(f"load: {n_clients} clients x {per_client} jobs ({n_clients // 4} reconnecting mid-run): lost {out['lost']}, "
          f"duplicated {out['dup']}, round-robin start order {out['fair']}; queue wait p50 {out['wait_p50_s']} s "
          f"p99 {out['wait_p99_s']} s (all {len(records)} queued at once behind a 2 s job; after it ended p50 "
          f"{out['wait_after_blocker_p50_s']} s p99 {out['wait_after_blocker_p99_s']} s); throughput "
          f"{out['jobs_per_s']} jobs/s on one worker")
    return out

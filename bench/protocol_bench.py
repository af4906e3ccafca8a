"""Protocol figures on loopback: small-message round trip (p50/p99) and a 32 MB result transfer, plain and CURVE.

Runs a real server (selftest jobs) and a real client. The 32 MB figure is the time from asking for a finished job's
result (fetch) to holding all of it in the client: disk read, framing, transport and decoding included.
Targets: p50 <= 1 ms, 32 MB <= 150 ms plain. Last line:
    protocol: rtt_p50_ms=... rtt_p99_ms=... mb32_ms=... mb32_curve_ms=...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zmq  # noqa: E402

from backend.jobs.selftest import SelftestRunner  # noqa: E402
from backend.server import Server, ServerConfig  # noqa: E402
from shared import protocol as P  # noqa: E402
from shared.client import Client, CurveKeys  # noqa: E402

MB32 = 32 * 1024 * 1024


def rtt_ms(client: Client, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.request(P.Heartbeat())
        times.append((time.perf_counter() - t0) * 1000)
    return times


def transfer_ms(client: Client, repeats: int) -> float:
    job = client.submit("selftest", {"steps": 1, "result_bytes": MB32})
    client.wait(job, timeout_s=120)
    best = float("inf")
    for _ in range(repeats):
        client.attach(job)
        t0 = time.perf_counter()
        msg = client.wait(job, timeout_s=60)
        best = min(best, (time.perf_counter() - t0) * 1000)
        assert len(msg.payloads["payload.bin"].data) == MB32
    return best


def run(curve: bool, n_rtt: int, repeats: int, tmp: Path) -> tuple[list[float], float]:
    ctx = zmq.Context()
    keys = None
    if curve:
        from backend.cli import main

        main(["keys", "--dir", str(tmp / "keys"), "server"])
        main(["keys", "--dir", str(tmp / "keys"), "client", "bench"])
        keys = CurveKeys.load(tmp / "keys" / "server.key", tmp / "keys" / "bench.key_secret")
    server = Server(ServerConfig(bind="tcp://127.0.0.1:*", jobs_dir=tmp / ("jobs-curve" if curve else "jobs"),
                                 curve_keys=tmp / "keys" if curve else None),
                    {"selftest": SelftestRunner()}, context=ctx).start()
    client = Client(server.endpoint, curve=keys, context=ctx, timeout_s=30)
    try:
        client.ping()
        rtts = rtt_ms(client, n_rtt)
        return rtts, transfer_ms(client, repeats)
    finally:
        client.close()
        server.stop()
        ctx.destroy(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (under a minute)")
    args = parser.parse_args()
    n_rtt, repeats = (500, 3) if args.quick else (5000, 10)
    with tempfile.TemporaryDirectory() as d:
        rtts, mb32 = run(False, n_rtt, repeats, Path(d))
        _, mb32_curve = run(True, 10, repeats, Path(d))
    q = statistics.quantiles(rtts, n=100)
    print(f"small-message round trips: n={len(rtts)} mean={statistics.mean(rtts):.3f} ms")
    print(f"32 MB result fetch: plain best of {repeats} = {mb32:.1f} ms, CURVE = {mb32_curve:.1f} ms")
    print(f"protocol: rtt_p50_ms={q[49]:.3f} rtt_p99_ms={q[98]:.3f} mb32_ms={mb32:.1f} mb32_curve_ms={mb32_curve:.1f}")


if __name__ == "__main__":
    main()

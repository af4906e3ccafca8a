"""serve, ping, submit, status, fetch, cancel, keys: run the job server and talk to it."""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from backend.ratelimit import PEER_BYTES_PER_S, PEER_MSGS_PER_S
from backend.jobs import default_runners
from backend.server import ConfigError, Server, ServerConfig
from shared import paths
from shared import protocol as P
from shared.client import Client, ClientError, CurveKeys, save_result
from shared.spec import SpecError

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("serve", help="run the job server", description=(
        "Run the GPU job server. Jobs persist under --jobs-dir: finished results survive restarts, interrupted "
        "jobs resume (or are reported). Binding anything but loopback requires CURVE keys (--curve-keys) or "
        "--insecure."))
    p.add_argument("--bind", default=DEFAULT_ENDPOINT, help=f"ZeroMQ endpoint to bind (default {DEFAULT_ENDPOINT})")
    p.add_argument("--jobs-dir", type=Path, default=None, help=f"job store (default {paths.jobs_dir()})")
    p.add_argument("--curve-keys", type=Path, default=None,
                   help="folder with server.key_secret and authorized/*.key (see `joker-head keys`)")
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without encryption")
    p.add_argument("--devices", default="auto", help="comma-separated devices, one worker each (default: every "
                   "CUDA GPU, else cpu)")
    p.add_argument("--max-jobs-per-client", type=_positive, default=16, help="queued + running jobs per client")
    p.add_argument("--max-queued", type=_positive, default=1000, help="queued + running jobs of all clients")
    p.add_argument("--max-request-mb", type=_positive, default=P.MAX_REQUEST // 2**20,
                   help="payload of one request, all frames together, in MiB (default %(default)s)")
    p.add_argument("--max-frame-mb", type=_positive, default=P.MAX_REQUEST_FRAME // 2**20,
                   help="one payload frame (e.g. a reference image) in MiB (default %(default)s)")
    p.add_argument("--peer-msgs-per-s", type=_non_negative, default=PEER_MSGS_PER_S,
                   help="messages per second one client may send; more get `rate_limited` (0: no limit; default "
                   "%(default)s)")
    p.add_argument("--peer-mib-per-s", type=_non_negative, default=PEER_BYTES_PER_S / 2**20,
                   help="MiB per second one client may send (0: no limit; default %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("ping", help="check that a server answers", description="Round-trip a hello to the server "
                       "and print its version, job kinds, devices and the round-trip time.")
    _client_args(p)
    p.set_defaults(func=cmd_ping)

    p = sub.add_parser("submit", help="submit a job", description=(
        "Submit a job of KIND. Parameters come as JSON (--params or --params-file), inputs as name=file pairs: "
        ".npy arrays (loaded without pickles), .png images, anything else as bytes."))
    _client_args(p)
    p.add_argument("kind", help="job kind, e.g. selftest, preview, generate")
    p.add_argument("--params", default=None, help="parameters as a JSON object")
    p.add_argument("--params-file", type=Path, default=None, help="parameters from a JSON file")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE", help="an input frame")
    p.add_argument("--job-id", default=None, help="reuse an id to resubmit idempotently (default: a new uuid)")
    p.add_argument("--wait", action="store_true", help="wait for the result, printing progress")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the result with --wait")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="show one job or list jobs")
    _client_args(p)
    p.add_argument("job", nargs="?", help="job id (omit to list recent jobs)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("fetch", help="reattach to a job and save its result", description=(
        "Reattach to a job by id (after a disconnect or a server restart), print its progress and save the "
        "result into --out."))
    _client_args(p)
    p.add_argument("job")
    p.add_argument("--out", type=Path, default=Path("."))
    p.add_argument("--wait-s", type=float, default=None, help="give up after this many seconds")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("cancel", help="cancel a job")
    _client_args(p)
    p.add_argument("job")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("keys", help="create CURVE key pairs", description=(
        "Create CURVE keys in DIR. `keys --dir DIR server` makes the server's pair (give server.key to clients); "
        "`keys --dir DIR client NAME` makes a client's pair and authorizes it (copies NAME.key into "
        "DIR/authorized/, which `serve --curve-keys DIR` reads). Keep *.key_secret files private."))
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("role", choices=("server", "client"))
    p.add_argument("name", nargs="?", default="client")
    p.set_defaults(func=cmd_keys)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=DEFAULT_ENDPOINT, help=f"server endpoint (default {DEFAULT_ENDPOINT})")
    p.add_argument("--server-key", type=Path, default=None, help="the server's public key file (server.key)")
    p.add_argument("--client-key", type=Path, default=None, help="this client's secret key file (NAME.key_secret)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds without a reply before giving up")


def _client(args: argparse.Namespace):
    curve = None
    if args.server_key or args.client_key:
        if not (args.server_key and args.client_key):
            raise SystemExit("error: CURVE needs both --server-key (server.key) and --client-key (NAME.key_secret)")
        curve = CurveKeys.load(args.server_key, args.client_key)
    return Client(args.server, curve=curve, timeout_s=args.timeout, name="joker-head cli")


def _devices(spec: str) -> tuple[str, ...]:
    if spec != "auto":
        return tuple(d.strip() for d in spec.split(",") if d.strip())
    try:
        import torch

        if torch.cuda.is_available():
            return tuple(f"cuda:{i}" for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    return ("cpu",)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (0 switches the limit off), got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def cmd_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = ServerConfig(bind=args.bind, jobs_dir=args.jobs_dir or paths.jobs_dir(), curve_keys=args.curve_keys,
                          insecure=args.insecure, devices=_devices(args.devices),
                          max_jobs_per_client=args.max_jobs_per_client, max_queued=args.max_queued,
                          max_request=args.max_request_mb * 2**20, max_frame=args.max_frame_mb * 2**20,
                          peer_msgs_per_s=args.peer_msgs_per_s, peer_bytes_per_s=args.peer_mib_per_s * 2**20)
    try:
        server = Server(config, default_runners())
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"joker-head serving on {server.endpoint} (jobs in {config.jobs_dir}, devices {', '.join(config.devices)}, "
          f"{'CURVE' if config.curve_keys else 'no encryption'})", flush=True)
    server.serve_forever()
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    with _client(args) as client:
        welcome, rtt = client.ping()
    print(f"{welcome.server} protocol v{P.PROTOCOL_VERSION}: kinds {', '.join(welcome.kinds)}; "
          f"devices {', '.join(welcome.devices)}; round trip {rtt * 1000:.2f} ms")
    return 0


def _load_input(spec: str) -> tuple[str, P.Payload]:
    name, _, file = spec.partition("=")
    if not file:
        raise SystemExit(f"error: --input expects NAME=FILE, received {spec!r}")
    path = Path(file)
    if path.suffix == ".npy":
        return name, np.load(path, allow_pickle=False)
    if path.suffix == ".png":
        return name, P.Png(path.read_bytes())
    return name, P.Blob(path.read_bytes())


def _print_event(msg: P.Message) -> None:
    body = msg.body
    if isinstance(body, P.Progress):
        eta = f" eta {body.eta_s:.0f}s" if body.eta_s is not None else ""
        print(f"[{body.stage}] {body.step}/{body.total} {body.message}{eta}", flush=True)
    elif isinstance(body, P.JobState):
        print(f"job {body.job}: {body.state}", flush=True)


def _report_error(e: Any) -> int:
    err = e.error
    print(f"error [{err.code}]: {err.message}", file=sys.stderr)
    if err.hint and err.hint not in err.message:
        print(f"hint: {err.hint}", file=sys.stderr)
    return 1


def cmd_submit(args: argparse.Namespace) -> int:
    params = json.loads(args.params_file.read_text() if args.params_file else (args.params or "{}"))
    inputs = dict(_load_input(s) for s in args.input)
    with _client(args) as client:
        try:
            job = client.submit(args.kind, params, inputs, job_id=args.job_id)
            client.confirm(job)  # closing the socket right after a send could drop it
            print(job, flush=True)
            if args.wait:
                result = client.wait(job, on_event=_print_event)
                for path in save_result(result, args.out / job):
                    print(path)
        except SpecError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except ClientError as e:
            return _report_error(e)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            if args.job:
                reply = client.request(P.Status(args.job)).body
                states = [reply]
            else:
                states = list(client.request(P.List()).body.jobs)
        except ClientError as e:
            return _report_error(e)
    for s in states:
        err = f"  ({s.error})" if s.error else ""
        pos = f" #{s.position}" if s.state == "queued" else ""
        print(f"{s.job}  {s.kind:<10} {s.state}{pos}{err}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.attach(args.job)
        try:
            result = client.wait(args.job, timeout_s=args.wait_s, on_event=_print_event)
        except ClientError as e:
            return _report_error(e)
    for path in save_result(result, args.out / args.job):
        print(path)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            state = client.request(P.Cancel(args.job)).body
        except ClientError as e:
            return _report_error(e)
    print(f"job {state.job}: {state.state}" + (" (cancelling)" if state.state == "running" else ""))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    import zmq.auth

    args.dir.mkdir(parents=True, exist_ok=True)
    name = "server" if args.role == "server" else args.name
    if not re.fullmatch(P.NAME, name):
        raise SystemExit(f"error: key name must match {P.NAME}, received {name!r}")
    public, secret = zmq.auth.create_certificates(str(args.dir), name)
    Path(secret).chmod(0o600)
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    if args.role == "client":
        authorized = args.dir / "authorized"
        authorized.mkdir(exist_ok=True)
        shutil.copy(public, authorized / Path(public).name)
        print(f"authorized: {authorized / Path(public).name}")
    return 0

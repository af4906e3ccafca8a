"""The job server: a ZeroMQ ROUTER socket, a persistent job store, a fair queue and one worker per compute device.

Threads and sockets (sockets are not thread-safe, so each has exactly one owner):
    serve thread   owns the ROUTER (clients) and a PULL socket (events from workers); validates every request,
                   answers it, forwards progress and results to each job's subscribers.
    worker threads one per device; each owns a PUSH socket to the serve thread; runs jobs via their runner.
A job's subscribers are the clients that submitted or fetched it; a client that reconnects (or a server that
restarts) is re-subscribed by its ``fetch``. Progress and results are persisted before they are sent.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import threading
import time
import traceback
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import zmq

from backend.jobstore import JobRecord, JobStore, StoreError, request_digest
from backend.fairqueue import FairQueue
from backend.ratelimit import (PEER_BURST_MSGS, PEER_BYTES_PER_S, PEER_MSGS_PER_S, Budget, PeerLimiter,
                              Refusal)
from backend.runner import JobCancelled, JobContext, JobFailed, ProgressEvent, Runner
from shared import protocol as P
from shared.endpoints import is_loopback
from shared.errors import JokerError
from shared.jobs import validate_inputs
from shared.png import encode_png
from shared.spec import SpecError, from_dict

log = logging.getLogger("joker_head.server")
# libzmq allocates each incoming message in its I/O thread; once freed, glibc keeps those pages in that thread's arena
# rather than giving them back. After a flood of large messages (tens of MiB through the decoder), the serve thread
# hands them back: when the flood is over, or every TRIM_EVERY_S while it lasts.
TRIM_AFTER_BYTES = 32 * 1024 * 1024
TRIM_EVERY_S = 5.0
RCVHWM = 32  # messages waiting per peer; a client with more in flight waits (TCP back-pressure), nothing is lost
EVENTS_ENDPOINT = "inproc://joker-head-events-{}"
INTERRUPTED = JokerError("the server stopped while this job ran", "resubmit it with the same job id to run it again",
                         "interrupted").to_dict()


@dataclass
class ServerConfig:
    bind: str = "tcp://127.0.0.1:5555"
    jobs_dir: Path = Path("jobs")
    curve_keys: Optional[Path] = None  # folder with server.key_secret and authorized/*.key
    insecure: bool = False  # allow a non-loopback bind without CURVE
    devices: tuple[str, ...] = ("cpu",)
    heartbeat_s: float = 2.0
    max_frame: int = P.MAX_REQUEST_FRAME
    max_jobs_per_client: int = 16  # queued + running
    max_request: int = P.MAX_REQUEST  # payload bytes of one request, all frames together
    max_queued: int = 1000  # queued + running jobs of all clients (without keys a client can mint new ids)
    result_cache_bytes: int = 256 * 1024 * 1024  # repeated fetches of a result share one copy in memory
    name: str = "joker-head"
    # What one peer (CURVE key, else routing id) may cost per second; over it: `rate_limited` errors. 0 = no limit.
    peer_msgs_per_s: float = PEER_MSGS_PER_S
    peer_burst_msgs: int = PEER_BURST_MSGS  # messages a quiet peer may send at once
    peer_bytes_per_s: float = PEER_BYTES_PER_S
    peer_burst_bytes: int = 0  # 0: one largest request (max_request + a header), so any valid upload fits
    max_tracked_peers: int = 10_000  # peers with a budget in memory; the least recent is forgotten first


class ConfigError(JokerError, ValueError):
    """A server configuration that cannot run (a public bind without keys, missing key files); the message says how."""

    default_code = "config"


@dataclass
class _Job:
    record: JobRecord
    subscribers: set = field(default_factory=set)  # routing ids
    ctx: Optional[JobContext] = None
    cancel_requested: bool = False  # by a client, as opposed to a server shutdown


class Server:
    def __init__(self, config: ServerConfig, runners: dict[str, Runner], context: Optional[zmq.Context] = None):
        if not is_loopback(config.bind) and config.curve_keys is None and not config.insecure:
            raise ConfigError(f"refusing to bind {config.bind} without encryption: anyone on the network could "
                              "submit jobs. Create keys with `joker-head keys` and pass --curve-keys DIR, or bind "
                              "127.0.0.1 and tunnel over SSH, or pass --insecure on a trusted network")
        self.config, self.runners = config, runners
        self.ctx = context or zmq.Context.instance()
        self.store = JobStore(config.jobs_dir)
        self.queue = FairQueue()
        self.jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()  # guards self.jobs records shared by the serve and worker threads
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._events_endpoint = EVENTS_ENDPOINT.format(id(self))
        self._auth: Optional[Any] = None  # a zmq ThreadAuthenticator once CURVE is on
        self._results: "OrderedDict[str, tuple[Any, dict, int]]" = OrderedDict()  # meta, payloads, bytes
        self.stats: Counter = Counter()  # requests, errors, rate_limited, internal_errors (bugs), worker_errors
        self.limiter = PeerLimiter(Budget(
            config.peer_msgs_per_s, max(1, config.peer_burst_msgs), config.peer_bytes_per_s,
            max(config.peer_burst_bytes, config.max_request + P.MAX_HEADER), max(1, config.max_tracked_peers)))
        self.endpoint: Optional[str] = None
        self._router = self._bind_router()
        self._events = self.ctx.socket(zmq.PULL)
        self._events.bind(self._events_endpoint)
        self._recover()

    # --- set-up ---------------------------------------------------------------------------------------------------
    def _bind_router(self) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, self.config.max_frame + P.MAX_HEADER)  # per frame: oversize = disconnect
        sock.setsockopt(zmq.RCVHWM, RCVHWM)  # per peer: with new peers every second, what waits is peers x this
        sock.setsockopt(zmq.SNDHWM, 10000)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting client with the same id takes over its route
        if self.config.curve_keys is not None:
            self._enable_curve(sock, Path(self.config.curve_keys))
        sock.bind(self.config.bind)
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        return sock

    def _enable_curve(self, sock: zmq.Socket, keys: Path) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        secret_file, allowed = keys / "server.key_secret", keys / "authorized"
        if not secret_file.exists() or not allowed.is_dir():
            raise ConfigError(f"{keys} needs server.key_secret and a folder authorized/ with the clients' public "
                              "keys: create them with `joker-head keys --dir DIR server` and "
                              "`joker-head keys --dir DIR client NAME`")
        public, secret = zmq.auth.load_certificate(secret_file)
        self._auth = ThreadAuthenticator(self.ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(allowed))
        sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True

    def _recover(self) -> None:
        """After a restart: re-queue waiting jobs, resume or report interrupted ones."""
        self.store.sweep()  # half-written jobs and results of a crash
        for record in sorted(self.store.load_all(), key=lambda r: r.created):
            job = _Job(record)
            self.jobs[record.job] = job
            record.last_seq = max(record.last_seq, self.store.last_seq(record.job))  # progress saved after state
            if record.state in ("queued", "running", "interrupted") and self.store.has_result(record.job):
                record.state, record.error = "done", None  # killed between committing the result and the state
                self._save_state(record)
            if record.state in ("queued", "running", "interrupted") and record.kind not in self.runners:
                record.state, record.error = "failed", JokerError(
                    f"this server no longer runs {record.kind} jobs",
                    "start the server with the runner for that kind, then resubmit", "unknown_kind").to_dict()
                self._save_state(record)
            if record.state in ("running", "interrupted"):
                resumable = getattr(self.runners.get(record.kind), "resumable", False)
                record.state = "queued" if resumable else "interrupted"
                record.error = None if resumable else dict(INTERRUPTED)
                self._save_state(record)
            if record.state == "queued":
                self.queue.put(record.client, record.job)

    # --- running --------------------------------------------------------------------------------------------------
    def start(self) -> "Server":
        """Start the serve thread and the workers; returns at once."""
        for device in self.config.devices:
            t = threading.Thread(target=self._worker, args=(device,), name=f"worker-{device}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._serve, name="serve", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel running jobs, stop the threads, close the sockets."""
        self._stop.set()
        self.queue.close()
        with self._lock:
            for job in self.jobs.values():
                if job.ctx is not None:
                    job.ctx.cancel()
        for t in self._threads:
            t.join(timeout)
        if self._auth is not None:
            self._auth.stop()

    def serve_forever(self) -> None:
        self.start()
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._events, zmq.POLLIN)
        received, trimmed_at = 0, time.monotonic()  # bytes received since the heap was last trimmed
        try:
            while not self._stop.is_set():
                idle = not poller.poll(100)
                for _ in range(256):  # drain, but keep serving both sockets
                    if not self._router.poll(0):
                        break
                    frames = self._router.recv_multipart(copy=False)
                    received += sum(len(f) for f in frames)
                    self._guarded(self._handle_frames, frames)
                    del frames  # the message buffers go back to libzmq now, not at the next message
                while self._events.poll(0):
                    self._guarded(self._handle_event, self._events.recv_multipart())
                now = time.monotonic()
                if received >= TRIM_AFTER_BYTES and (idle or now - trimmed_at > TRIM_EVERY_S):
                    received, trimmed_at = 0, now
                    trim_heap()
        finally:
            self._router.close(0)
            self._events.close(0)

    def _guarded(self, handler: Any, frames: list) -> None:
        """The serve thread outlives any bug in a handler: log it, count it, serve on."""
        try:
            handler(frames)
        except Exception:  # noqa: BLE001
            self.stats["internal_errors"] += 1
            log.exception("internal error in the serve thread")

    # --- requests -------------------------------------------------------------------------------------------------
    def _handle_frames(self, frames: list) -> None:
        """One request: charge its peer, decode it (cheap checks first), run its handler, answer it."""
        identity, frames = frames[0].bytes, frames[1:]
        client = self._client_key(identity, frames)
        self.stats["requests"] += 1
        refusal = self.limiter.charge(client, sum(len(f) for f in frames), time.monotonic())
        if refusal is not None:
            self.stats["rate_limited"] += 1
            return self._send(identity, self._rate_limited(refusal), req=P.peek_req(frames[0]) if frames else None)
        req = job = None
        try:
            msg = P.decode(frames, self.config.max_frame, allowed=P.REQUESTS, max_total=self.config.max_request)
            req, job = msg.req, getattr(msg.body, "job", None)
            getattr(self, "_on_" + msg.type)(identity, client, msg)
        except SpecError as e:  # req and job are known when the header could be read (P.decode attaches them)
            self.stats["errors"] += 1
            self._send(identity, P.Error.from_exception(e, e.job or job), req=req if req is not None else e.req)
        except Exception as e:  # never let one request kill the server
            self.stats["internal_errors"] += 1
            log.exception("internal error handling a request")
            self._send(identity, P.Error("internal", P.clip(f"internal server error: {type(e).__name__}: {e}", 4000),
                                         hint="the server logged the details; please report it"), req=req)

    def _rate_limited(self, refusal: Refusal) -> P.Error:
        c = self.config
        retry = min(3600.0, max(1, math.ceil(refusal.retry_after_s * 1000)) / 1000)  # whole ms, never 0
        return P.Error("rate_limited", f"this client sent more {refusal.what} per second than the server allows",
                       field="rate", expected=f"at most {c.peer_msgs_per_s:g} messages and "
                       f"{c.peer_bytes_per_s / 2**20:g} MiB per second per client", received=f"more {refusal.what}",
                       hint=f"retry after {retry} s (the request was not processed)", retry_after_s=retry)

    def _client_key(self, identity: bytes, frames: list) -> str:
        """The authenticated CURVE public key when keys are configured, else the connection's routing id."""
        if self.config.curve_keys is not None and frames:
            try:
                user = frames[0].get("User-Id")
                if user:
                    return "key:" + user
            except (zmq.ZMQError, AttributeError):
                pass
        return "id:" + identity.hex()

    def _send(self, identity: bytes, body: Any, payloads: Optional[dict] = None, req: Optional[str] = None) -> None:
        try:
            self._router.send_multipart([identity] + P.encode(body, payloads, req), copy=False)
        except zmq.ZMQError as e:  # peer gone or HWM reached: the client refetches
            log.warning("could not send %s: %s", body.TYPE, e)

    def _on_hello(self, identity: bytes, client: str, msg: P.Message) -> None:
        self._send(identity, P.Welcome(self.config.name, tuple(sorted(self.runners)), tuple(self.config.devices),
                                       self.config.max_frame, self.config.heartbeat_s, self.config.max_request),
                   req=msg.req)

    def _on_heartbeat(self, identity: bytes, client: str, msg: P.Message) -> None:
        self._send(identity, P.Heartbeat(), req=msg.req)

    def _on_submit(self, identity: bytes, client: str, msg: P.Message) -> None:
        body: P.Submit = msg.body
        runner = self.runners.get(body.kind)
        if runner is None:
            raise _job_error(body.job, "kind", f"one of {', '.join(sorted(self.runners))}", body.kind,
                             "this server does not run that kind of job", "unknown_kind")
        params = from_dict(runner.kind.params, body.params if body.params is not None else {}, prefix="params.")
        validate_inputs(runner.kind, msg.payloads)
        digest = request_digest(body.kind, body.params, msg.payloads)
        existing = self.jobs.get(body.job)
        if existing is not None:
            return self._resubmitted(identity, existing, digest, msg.req)
        active = [j.record.client for j in self.jobs.values() if j.record.state in ("queued", "running")]
        mine = active.count(client)
        if mine >= self.config.max_jobs_per_client:
            raise _job_error(body.job, "job", f"at most {self.config.max_jobs_per_client} queued or running jobs "
                             "per client", mine, "wait for a job to finish or cancel one", "too_many_jobs")
        if len(active) >= self.config.max_queued:
            raise _job_error(body.job, "job", f"at most {self.config.max_queued} queued or running jobs on this "
                             "server", len(active), "the server is busy: try again later", "too_many_jobs")
        record = JobRecord(body.job, body.kind, client, digest)
        del params  # validated; the worker re-reads the stored request
        try:
            self.store.create(record, body.params if body.params is not None else {}, msg.payloads)
        except StoreError as e:
            raise _job_error(body.job, "jobs_dir", "free space to store the job", "an error", str(e), "storage")
        job = _Job(record, {identity})
        with self._lock:
            self.jobs[record.job] = job
        self.queue.put(client, record.job)
        self._send(identity, P.Accepted(record.job, "queued", self.queue.position(record.job)), req=msg.req)

    def _resubmitted(self, identity: bytes, job: _Job, digest: str, req: Optional[str]) -> None:
        record = job.record
        if record.digest != digest:
            raise _job_error(record.job, "job", "a new job id for a different request", record.job,
                             "generate a fresh id (uuid4) for every new job", "job_id_conflict")
        job.subscribers.add(identity)
        if record.state == "interrupted":  # resubmitting an interrupted job runs it again (resuming if it can)
            record.state, record.error = "queued", None
            self._save_state(record)
            self.queue.put(record.client, record.job)
        self._send(identity, P.Accepted(record.job, record.state, self.queue.position(record.job), True), req=req)

    def _on_cancel(self, identity: bytes, client: str, msg: P.Message) -> None:
        job = self._job(msg.body.job)
        dequeued = False
        with self._lock:
            if job.record.state == "queued" and self.queue.remove(job.record.job):
                job.record.state, dequeued = "cancelled", True
                self._save_state(job.record)
            elif job.ctx is not None:
                job.cancel_requested = True
                job.ctx.cancel()  # the worker records the cancellation when the runner stops
        self._send(identity, self._state(job), req=msg.req)
        if dequeued:  # no worker will ever report this job: its final `cancelled` goes out here, to every follower
            self._send_final(job, job.subscribers | {identity})

    def _on_status(self, identity: bytes, client: str, msg: P.Message) -> None:
        self._send(identity, self._state(self._job(msg.body.job)), req=msg.req)

    def _on_list(self, identity: bytes, client: str, msg: P.Message) -> None:
        mine = self.config.curve_keys is None  # without keys clients have no stable identity: list all
        jobs = [j for j in self.jobs.values() if mine or j.record.client == client]
        jobs.sort(key=lambda j: j.record.created, reverse=True)
        self._send(identity, P.JobList(tuple(self._state(j) for j in jobs[: msg.body.limit])), req=msg.req)

    def _on_fetch(self, identity: bytes, client: str, msg: P.Message) -> None:
        job = self._job(msg.body.job)
        job.subscribers.add(identity)
        self._send(identity, self._state(job), req=msg.req)
        for event in self.store.progress(job.record.job, msg.body.since):
            self._send(identity, P.Progress(job=job.record.job, **event))
        self._send_final(job, {identity})

    def _job(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise _job_error(job_id, "job", "the id of a job this server knows", job_id,
                             "check the id; `joker-head status` lists the jobs", "unknown_job")
        return job

    def _state(self, job: _Job) -> P.JobState:
        r = job.record
        error = P.clip(r.error.get("message", ""), 2000) if r.error else None
        return P.JobState(r.job, r.kind, r.state, r.created, r.updated,
                          self.queue.position(r.job) if r.state == "queued" else 0, r.last_seq, error)

    # --- worker events --------------------------------------------------------------------------------------------
    def _handle_event(self, frames: list[bytes]) -> None:
        event = json.loads(frames[0])
        job = self.jobs.get(event.pop("job"))
        if job is None:
            return
        if event.pop("type") == "progress":
            payloads = {"preview": P.Png(frames[1])} if len(frames) > 1 else None
            body = P.Progress(job=job.record.job, **event)
            for identity in list(job.subscribers):
                self._send(identity, body, payloads)
        else:
            self._send_final(job, job.subscribers)

    def _send_final(self, job: _Job, identities: set) -> None:
        r = job.record
        if r.state == "done":
            try:
                meta, payloads = self._result(r.job)
            except (OSError, ValueError, KeyError, TypeError) as e:  # lost or damaged on disk: say so, never hang
                log.error("result of job %s unreadable: %s", r.job, e)
                body = P.Error("result_missing", P.clip(f"the result of job {r.job} cannot be read: {e}", 4000),
                               hint="resubmit the job with a new id; check the server's disk", job=r.job)
                for identity in list(identities):
                    self._send(identity, body)
                return
            for identity in list(identities):
                self._send(identity, P.Result(r.job, meta), payloads)
        elif r.state in ("failed", "cancelled") or (r.state == "interrupted" and not self._stop.is_set()):
            err = r.error or {"code": r.state, "message": f"the job was {r.state}"}
            body = P.Error(P.clip(err.get("code", r.state), 64), P.clip(err.get("message", ""), 4000),
                           hint=P.clip(err.get("hint", ""), 1000), job=r.job)
            for identity in list(identities):
                self._send(identity, self._state(job))
                self._send(identity, body)

    def _result(self, job_id: str) -> tuple[Any, dict]:
        """A finished job's meta and payloads, read once and shared by every fetch (a fetch flood costs no memory)."""
        if job_id in self._results:
            self._results.move_to_end(job_id)
            return self._results[job_id][:2]
        meta, artifacts = self.store.result(job_id)
        payloads = {a.name: P.Blob(a.data, a.media_type) for a in artifacts}
        size = sum(len(a.data) for a in artifacts)
        self._results[job_id] = (meta, payloads, size)
        while len(self._results) > 1 and sum(v[2] for v in self._results.values()) > self.config.result_cache_bytes:
            self._results.popitem(last=False)
        return meta, payloads

    # --- workers --------------------------------------------------------------------------------------------------
    def _worker(self, device: str) -> None:
        push = self.ctx.socket(zmq.PUSH)
        push.linger = 0
        push.setsockopt(zmq.SNDHWM, 0)  # progress must never block a job; the serve thread drains quickly
        push.connect(self._events_endpoint)
        try:
            while not self._stop.is_set():
                job_id = self.queue.get(timeout=0.2)
                if job_id is None:
                    continue
                try:
                    self._run_job(self.jobs[job_id], device, push)
                except Exception:  # noqa: BLE001 — a worker must never die: every later job would hang
                    self.stats["worker_errors"] += 1
                    log.exception("worker %s: internal error around job %s", device, job_id)
        finally:
            push.close()

    def _run_job(self, job: _Job, device: str, push: zmq.Socket) -> None:
        record = job.record
        runner = self.runners[record.kind]
        ctx = JobContext(record.job, self.store.workdir(record.job), device, resume=record.attempts > 0,
                         emit=lambda e: self._emit_progress(job, e, push))
        with self._lock:
            if record.state != "queued":  # cancelled while it waited
                return
            job.ctx, record.state, record.attempts = ctx, "running", record.attempts + 1
            record.started = time.time()
            self._save_state(record)
        try:
            request = self.store.request(record.job)
            params = from_dict(runner.kind.params, request["params"], prefix="params.")
            result = runner.run(params, self.store.inputs(record.job), ctx)
            _check_meta(result.meta)
            self.store.save_result(record.job, result.meta, result.artifacts)
            record.state = "done"
        except JobCancelled:
            if job.cancel_requested or not self._stop.is_set():
                record.state, record.error = "cancelled", JokerError("the job was cancelled", code="cancelled").to_dict()
            else:  # the server is shutting down: the next start resumes or reports it
                record.state, record.error = "interrupted", dict(INTERRUPTED)
        except JokerError as e:  # a runner's, the prior's, the export's or the store's: recorded as it is
            record.state, record.error = "failed", _failure(e)
        except Exception as e:  # noqa: BLE001 — a runner bug fails its job, never the server
            record.state, record.error = "failed", _describe_exception(e)
            log.error("job %s failed:\n%s", record.job, traceback.format_exc())
        finally:
            with self._lock:
                job.ctx = None
                self._save_state(record)
            _notify(push, [json.dumps({"type": "final", "job": record.job}).encode()])

    def _save_state(self, record: JobRecord) -> None:
        try:
            self.store.save_state(record)
        except StoreError as e:  # the in-memory state stays right; the disk catches up on the next write
            log.error("%s", e)

    def _emit_progress(self, job: _Job, e: ProgressEvent, push: zmq.Socket) -> None:
        record = job.record
        record.last_seq += 1
        event = {"seq": record.last_seq, "stage": P.clip(e.stage, 64), "step": max(0, int(e.step)),
                 "total": max(0, int(e.total)), "message": P.clip(e.message, 1000), "metrics": _finite(e.metrics),
                 "eta_s": e.eta_s if e.eta_s is not None and e.eta_s >= 0 else None}
        self.store.append_progress(record.job, event)
        frames = [json.dumps({"type": "progress", "job": record.job, **event}).encode()]
        if e.preview is not None:
            frames.append(encode_png(e.preview, level=1))
        _notify(push, frames)


_LIBC: Any = None


def trim_heap() -> None:
    """Return the allocator's free pages to the OS (glibc ``malloc_trim``; a no-op elsewhere). Costs ~1 ms."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim this way
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def _notify(push: zmq.Socket, frames: list) -> None:
    """Worker -> serve thread. Never blocks: after shutdown nobody listens, and the store already has it all."""
    try:
        push.send_multipart(frames, flags=zmq.NOBLOCK)
    except zmq.ZMQError:
        pass


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {P.clip(k, 64): v for k, v in list(metrics.items())[:32] if v == v and abs(v) != float("inf")}


def _check_meta(meta: Any) -> None:
    """A result's meta must be strict JSON, or it could be stored but never sent."""
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise JobFailed(f"the job's result metadata is not valid JSON: {e}", "a runner bug: report it",
                        code="job_error") from None


def _describe_exception(e: Exception) -> dict:
    name = type(e).__name__
    if isinstance(e, MemoryError) or name == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError, without torch
        return {"code": "out_of_memory", "message": P.clip(f"out of memory: {e}".strip(), 2000),
                "hint": "choose a smaller quality preset, lower the texture size, or free GPU memory"}
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return {"code": "storage", "message": P.clip(f"the server's disk is full: {e}", 2000),
                "hint": "free disk space on the server (or point --jobs-dir at a larger disk), then resubmit"}
    return {"code": "job_error", "message": P.clip(f"{name}: {e}", 2000), "hint": "the server logged the traceback"}


def _failure(e: JokerError) -> dict:
    """A family error as a job's failure record: its wire form, the message clipped to what the record keeps."""
    return {**e.to_dict(), "message": P.clip(str(e), 2000)}


class JobError(SpecError):
    """A request refused for one job (unknown kind, too many jobs, id conflict): the error reply names that job."""

    def __init__(self, job: str, field_name: str, expected: str, received: Any, hint: str, code: str):
        super().__init__(field_name, expected, received, hint, code=code)
        self.job = job


def _job_error(job: str, field_name: str, expected: str, received: Any, hint: str, code: str) -> JobError:
    return JobError(job, field_name, expected, received, hint, code)

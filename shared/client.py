"""The client: one object owning one DEALER socket. No threads.

Blender's timers call :meth:`Client.pump` (non-blocking) on the main thread and get a list of events; the command line
uses the blocking helpers (:meth:`request`, :meth:`wait`), which pump internally. The client sends heartbeats when
idle, declares the connection lost when the server is silent past ``timeout_s``, then reconnects with the same
routing id, resubmits submissions that were never acknowledged (idempotent: the job id is the client's) and
reattaches to every job it follows with ``fetch(since=last seen progress)`` — which also covers a restarted server.
Each job's result is delivered to the caller once, however often it arrives.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import zmq

from . import protocol as P
from .errors import JokerError
from .jobs import JOB_KINDS, validate_inputs
from .spec import SpecError, from_dict, to_dict

SERVER_TYPES = ("welcome", "heartbeat", "accepted", "progress", "job_state", "job_list", "result", "error")


@dataclass
class Connected:
    TYPE = "connected"
    welcome: P.Welcome


@dataclass
class Disconnected:
    TYPE = "disconnected"
    reason: str


class ClientError(JokerError, RuntimeError):
    """An ``error`` reply, with the protocol's fields (code, field, expected, received, hint) both as ``error`` and as
    the family's attributes."""

    def __init__(self, error: P.Error):
        super().__init__(error.message or error.code, error.hint, error.code, field=error.field,
                         expected=error.expected, received=error.received)
        self.error = error


@dataclass
class CurveKeys:
    """CURVE keys for a client: the server's public key and this client's key pair (z85 bytes)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def load(cls, server_public_file: os.PathLike, client_secret_file: os.PathLike) -> "CurveKeys":
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(str(server_public_file))
        public, secret = zmq.auth.load_certificate(str(client_secret_file))
        if secret is None:
            raise ValueError(f"{client_secret_file} holds no secret key: pass the client's .key_secret file")
        return cls(server_public, public, secret)


@dataclass
class _Track:
    """What the client knows of a job it follows."""

    last_seq: int = 0
    state: str = "queued"
    finished: bool = False  # result or final error delivered to the caller
    submit: Optional[list] = None  # encoded submit frames until the server acknowledges them
    cancel: bool = False  # the caller cancelled it: resent with everything else after a refusal or reconnect
    sizes: dict[str, int] = field(default_factory=dict)  # payload bytes per input, checked against the server's limits


class Client:
    def __init__(self, endpoint: str, *, curve: Optional[CurveKeys] = None, timeout_s: float = 10.0,
                 heartbeat_s: float = 2.0, context: Optional[zmq.Context] = None, name: str = "joker-head client"):
        self.endpoint, self.curve, self.name = endpoint, curve, name
        self.timeout_s, self.heartbeat_s = timeout_s, heartbeat_s
        self.ctx = context or zmq.Context.instance()
        self.identity = uuid.uuid4().bytes  # kept across reconnects so the server's routes stay valid
        self.jobs: dict[str, _Track] = {}
        self.welcome: Optional[P.Welcome] = None
        self._backlog: deque = deque()  # events met while a blocking call waited for its own reply
        self._waiting: dict[str, float] = {}  # req id -> sent at
        self._resend_at = 0.0  # after a `rate_limited` refusal: when to resend what may have been refused
        self.rate_limited = 0  # refusals seen (the server's per-client budget); the client resends by itself
        self._sock: Optional[zmq.Socket] = None
        self._connect()

    # --- connection -----------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.routing_id = self.identity
        sock.setsockopt(zmq.MAXMSGSIZE, P.MAX_RESULT_FRAME + P.MAX_HEADER)
        sock.setsockopt(zmq.RCVHWM, 0)  # results are large but few: never drop them
        if self.curve is not None:
            sock.curve_serverkey, sock.curve_publickey = self.curve.server_public, self.curve.public
            sock.curve_secretkey = self.curve.secret
        sock.connect(self.endpoint)
        self._sock = sock
        now = time.monotonic()
        self._last_recv, self._last_send = now, 0.0
        self._send(P.Hello(self.name))

    def reconnect(self, reason: str = "reconnecting") -> None:
        """Drop the socket, open a new one, resubmit unacknowledged jobs and reattach to every unfinished job."""
        if self._sock is not None:
            self._sock.close(0)
        self.welcome = None
        self._waiting.clear()
        self._connect()
        self._resend()

    def _resend(self) -> None:
        """Everything the server may not have acted on: unacknowledged submissions (idempotent by job id), a fetch
        per unfinished job (from the last progress seen: replays are dropped by seq), and pending cancels."""
        for job_id, track in self.jobs.items():
            if track.submit is not None:
                self._send_frames(track.submit)
            elif not track.finished:
                self._send(P.Fetch(job_id, track.last_seq))
            if track.cancel and not track.finished:
                self._send(P.Cancel(job_id))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(0)
            self._sock = None

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self.welcome is not None

    # --- sending --------------------------------------------------------------------------------------------------
    def _send(self, body: Any, payloads: Optional[dict] = None, req: Optional[str] = None) -> None:
        self._send_frames(P.encode(body, payloads, req))

    def _send_frames(self, frames: list) -> None:
        try:
            self._sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # not connected yet: the heartbeat timeout leads to a reconnect and a resend
        self._last_send = time.monotonic()

    def submit(self, kind: str, params: Any = None, inputs: Optional[dict[str, P.Payload]] = None,
               job_id: Optional[str] = None) -> str:
        """Queue a job; returns its id at once. Params and inputs are validated here first for known kinds."""
        params_dict = to_dict(params) if params is not None and not isinstance(params, dict) else (params or {})
        inputs = inputs or {}
        if kind in JOB_KINDS:
            from_dict(JOB_KINDS[kind].params, params_dict, prefix="params.")
            validate_inputs(JOB_KINDS[kind], inputs)
        job_id = job_id or uuid.uuid4().hex
        frames = P.encode(P.Submit(job_id, kind, params_dict), inputs)
        track = _Track(submit=frames, sizes={name: _nbytes(p) for name, p in inputs.items()})
        error = self._over_limit(track.sizes)
        if error is not None:
            raise error
        self.jobs[job_id] = track
        self._send_frames(frames)  # before the welcome, the limits are checked when it comes (_fail_oversize)
        return job_id

    def _over_limit(self, sizes: dict[str, int]) -> Optional[P.ProtocolError]:
        """The error for inputs past the limits the server's welcome states (None before the welcome). A server drops
        a connection that sends an oversize frame (ZeroMQ's MAXMSGSIZE) without a word, so the client is the only
        place that can say what went wrong."""
        if self.welcome is None:
            return None
        hint = ("send a smaller input (e.g. a smaller reference image), or ask the server's operator to raise "
                "`joker-head serve --max-frame-mb/--max-request-mb`")
        limit, total = self.welcome.max_frame, sum(sizes.values())
        for name, n in sizes.items():
            if n > limit:
                return P.ProtocolError(f"inputs.{name}", f"at most {limit} bytes", f"{n} bytes", hint,
                                       code="frame_too_large")
        if total > self.welcome.max_request:
            return P.ProtocolError("inputs", f"at most {self.welcome.max_request} bytes together", f"{total} bytes",
                                   hint, code="request_too_large")
        return None

    def _fail_oversize(self) -> None:
        """Unacknowledged submissions past the limits the welcome states fail here, once, and are not resent."""
        for job_id, track in self.jobs.items():
            error = self._over_limit(track.sizes) if track.submit is not None else None
            if error is not None:
                track.submit, track.finished = None, True
                self._backlog.append(P.Message(P.Error.from_exception(error, job_id)))

    def confirm(self, job_id: str, timeout_s: Optional[float] = None) -> P.Accepted:
        """Block until the server acknowledged a submission (e.g. before closing the socket)."""
        msg = self._wait_for(lambda m: getattr(m.body, "job", None) == job_id and m.type in ("accepted", "error"),
                             timeout_s if timeout_s is not None else self.timeout_s)
        if msg is None:
            raise TimeoutError(f"the server at {self.endpoint} did not acknowledge job {job_id} in time — is the "
                               "backend running (`joker-head serve`)?")
        if isinstance(msg.body, P.Error):
            raise ClientError(msg.body)
        return msg.body

    def attach(self, job_id: str, since: int = 0) -> None:
        """Follow a job submitted earlier (e.g. by a previous Blender session): state, missed progress, result."""
        track = self.jobs.setdefault(job_id, _Track(last_seq=since))
        track.finished = False
        self._send(P.Fetch(job_id, track.last_seq))

    def cancel(self, job_id: str) -> None:
        if job_id in self.jobs:
            self.jobs[job_id].cancel = True
        self._send(P.Cancel(job_id))

    def forget(self, job_id: str) -> None:
        """Stop following a job (its events are ignored from now on)."""
        self.jobs.pop(job_id, None)

    # --- receiving ------------------------------------------------------------------------------------------------
    def pump(self, timeout_s: float = 0.0, max_events: int = 256) -> list[P.Message]:
        """Handle what arrived and the timers; return the events for the caller. Blocks at most ``timeout_s``."""
        events: list = [self._backlog.popleft() for _ in range(min(len(self._backlog), max_events))]
        if not events and timeout_s > 0:
            self._sock.poll(int(timeout_s * 1000))
        while len(events) < max_events:
            try:
                frames = self._sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            self._last_recv = time.monotonic()
            event = self._receive(frames)
            if event is not None:
                events.append(event)
        events.extend(self._timers())
        return events

    def _receive(self, frames: list) -> Optional[P.Message]:
        try:
            msg = P.decode(frames, P.MAX_RESULT_FRAME, allowed=SERVER_TYPES)
        except SpecError as e:  # a broken reply must not break the add-on
            return P.Message(P.Error("bad_reply", f"unreadable reply from the server: {e}", hint="check that the "
                                     "add-on and the backend are the same version"))
        if msg.req is not None:
            self._waiting.pop(msg.req, None)
        body, track = msg.body, self.jobs.get(getattr(msg.body, "job", None) or "")
        if isinstance(body, P.Error) and body.code == "rate_limited":  # not processed: resend, never a job failure
            self.rate_limited += 1
            self._resend_at = max(self._resend_at, time.monotonic() + body.retry_after_s)
            return msg if msg.req is not None else None  # a blocking request retries itself
        if isinstance(body, P.Welcome):
            first = self.welcome is None
            self.welcome = body
            self._fail_oversize()
            if msg.req is not None:  # the reply to a blocking ping
                return msg
            return P.Message(Connected(body)) if first else None
        if isinstance(body, P.Heartbeat):
            return msg if msg.req is not None else None
        if track is None:
            return msg
        if isinstance(body, P.Accepted):
            track.submit, track.state = None, body.state
        elif isinstance(body, P.Progress):
            if body.seq <= track.last_seq:
                return None  # a replay we have already seen
            track.last_seq = body.seq
        elif isinstance(body, P.JobState):
            track.state = body.state
            if track.submit is not None and body.state != "queued":
                track.submit = None
        elif (isinstance(body, P.Error) and body.code == "unknown_job" and track.submit is not None
              and msg.req is None):  # (a blocking request's reply always reaches its caller)
            # A cancel or fetch overtook our own submission, which the server refused unprocessed (rate) or has not
            # read yet: not final. The submission is resent (timer or reconnect) and a pending cancel follows it.
            return None
        elif isinstance(body, (P.Result, P.Error)):  # every job-level error is final for that job
            if track.finished and msg.req is None:
                return None  # exactly once for the caller, however often the server sends it
            track.finished, track.submit = True, None
        return msg

    def _timers(self) -> list:
        now = time.monotonic()
        if self._resend_at and now >= self._resend_at:
            self._resend_at = 0.0
            self._resend()
        if now - self._last_recv > self.timeout_s and self._last_send > self._last_recv:
            reason = (f"no reply from {self.endpoint} for {now - self._last_recv:.1f} s — is the backend running "
                      "and reachable? (reconnecting)")
            self.reconnect(reason)
            return [P.Message(Disconnected(reason))]
        if now - max(self._last_send, self._last_recv) > self.heartbeat_s:
            self._send(P.Heartbeat())
        return []

    # --- blocking helpers (command line, tests) --------------------------------------------------------------------
    def request(self, body: Any, payloads: Optional[dict] = None, timeout_s: Optional[float] = None) -> P.Message:
        """Send one request and wait for its reply; other events wait in the backlog for the next pump()."""
        req = uuid.uuid4().hex[:16]
        self._send(body, payloads, req)
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.timeout_s)
        while time.monotonic() < deadline:
            if self._sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                frames = self._sock.recv_multipart(copy=False)
                self._last_recv = time.monotonic()
                msg = self._receive(frames)
                if msg is None:
                    continue
                if msg.req == req and isinstance(msg.body, P.Error) and msg.body.code == "rate_limited":
                    time.sleep(max(0.0, min(msg.body.retry_after_s, deadline - time.monotonic())))
                    self._send(body, payloads, req)  # refused unprocessed: the same request again
                    continue
                if msg.req == req:
                    if isinstance(msg.body, P.Error):
                        raise ClientError(msg.body)
                    return msg
                self._backlog.append(msg)
        raise TimeoutError(f"no reply from {self.endpoint} within {timeout_s or self.timeout_s:.1f} s — is the "
                           "backend running (`joker-head serve`) and are the address and keys right?")

    def ping(self, timeout_s: Optional[float] = None) -> tuple[P.Welcome, float]:
        """Round trip a hello; returns the server's welcome and the round-trip time in seconds."""
        t0 = time.perf_counter()
        msg = self.request(P.Hello(self.name), timeout_s=timeout_s)
        return msg.body, time.perf_counter() - t0

    def wait(self, job_id: str, timeout_s: Optional[float] = None,
             on_event: Optional[Callable[[P.Message], None]] = None) -> P.Message:
        """Pump until the job's result arrives and return it; raise :class:`ClientError` if the job failed.

        ``on_event`` sees this job's events; other jobs' events stay queued for the next :meth:`pump`.
        """
        def final(m: P.Message) -> bool:
            if getattr(m.body, "job", None) != job_id:
                return False
            if on_event is not None:
                on_event(m)
            return m.type in ("result", "error")

        msg = self._wait_for(final, timeout_s)
        if msg is None:
            raise TimeoutError(f"job {job_id} did not finish within {timeout_s} s (it goes on; `joker-head fetch` "
                               "picks it up later)")
        if isinstance(msg.body, P.Error):
            raise ClientError(msg.body)
        return msg

    def _wait_for(self, predicate: Callable[[P.Message], bool], timeout_s: Optional[float]) -> Optional[P.Message]:
        """Pump until an event matches; the others go back to the backlog in order. None on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        others: list = []
        try:
            while deadline is None or time.monotonic() < deadline:
                for i, msg in enumerate(events := self.pump(timeout_s=0.05)):
                    if predicate(msg):
                        others.extend(events[i + 1:])
                        return msg
                    others.append(msg)
            return None
        finally:
            self._backlog.extendleft(reversed(others))


def _nbytes(payload: P.Payload) -> int:
    return int(payload.nbytes) if isinstance(payload, np.ndarray) else len(payload.data)


def save_result(msg: P.Message, folder: Path) -> list[Path]:
    """Write a result's artifacts (and meta.json) into ``folder``; returns the paths written."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, payload in msg.payloads.items():
        path = folder / Path(name).name  # names are protocol-validated; never follow a path from the wire
        data = payload.tobytes() if isinstance(payload, np.ndarray) else payload.data
        path.write_bytes(data)
        paths.append(path)
    meta_path = folder / "meta.json"
    meta_path.write_text(json.dumps({"job": msg.body.job, "meta": msg.body.meta}, indent=2))
    return paths + [meta_path]

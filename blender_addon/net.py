"""The add-on's one connection to the backend: a ``shared.client.Client`` pumped on Blender's main thread.

``pump()`` drains the client without blocking and writes what happened into the scenes' ``joker_head`` state:
job states, progress and ETA, streamed previews (into Images), errors with their hints, and results (saved to
disk, previews shown, heads imported). ``bpy.app.timers`` calls it every ``POLL_S`` while anything is in flight;
tests call it directly, because timers never fire in the bpy module. No threads: bpy and ZeroMQ sockets are both
single-owner.

Network policy: a loopback or ipc:// backend is the user's own machine and is always allowed; any other address
needs Blender's online access (Preferences > System > Network), and the panel says which address is contacted.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Optional

import bpy
from bpy.app.handlers import persistent

from . import images, prefs
from .props import find_job
from .shared import protocol as P
from .shared.endpoints import is_loopback

POLL_S = 0.1  # timer interval while jobs run

_session: Optional["Session"] = None


class Session:
    """One Client for one (address, keys, timeout); replaced when the preferences change."""

    def __init__(self, endpoint: str, server_key: str, client_key: str, timeout_s: float):
        from .shared.client import Client, CurveKeys  # imports zmq: fails clearly if its wheel is missing

        self.config = (endpoint, server_key, client_key, timeout_s)
        curve = CurveKeys.load(server_key, client_key) if server_key and client_key else None
        self.client = Client(endpoint, curve=curve, timeout_s=timeout_s, heartbeat_s=min(2.0, timeout_s / 3),
                             name=f"joker-head blender {bpy.app.version_string}")
        self.ping_sent: Optional[float] = None  # a connection test in flight

    def close(self) -> None:
        self.client.close()


# --- policy -------------------------------------------------------------------------------------------------------
def is_local(endpoint: str) -> bool:
    """The backend is on this machine (the shared loopback check)."""
    return is_loopback(endpoint)


def blocked_reason(context: Optional[bpy.types.Context] = None) -> Optional[str]:
    """Why the add-on may not contact the backend now, or None. Also used as the buttons' poll message."""
    endpoint = prefs.get(context).backend_address.strip()
    if not re.match(r"^(tcp|ipc)://\S+$", endpoint):
        return f"Backend address '{endpoint}' is not tcp://host:port (Preferences > Add-ons > Joker Head)"
    if not is_local(endpoint) and not bpy.app.online_access:
        return (f"Online access is off: allow it in Preferences > System > Network to contact {endpoint}, or run "
                "the backend on this machine")
    try:
        import zmq  # noqa: F401  (bundled wheel)
    except ImportError as e:
        return f"pyzmq is missing ({e}): reinstall the extension for this platform"
    return None


def session(context: Optional[bpy.types.Context] = None) -> Session:
    """The live session for the current preferences (created or replaced as needed)."""
    global _session
    p = prefs.get(context)
    config = (p.backend_address.strip(), bpy.path.abspath(p.server_public_key), bpy.path.abspath(p.client_secret_key),
              float(p.timeout_s))
    if _session is None or _session.config != config:
        reason = blocked_reason(context)
        if reason:
            raise RuntimeError(reason)
        if _session is not None:
            _session.close()
        _session = Session(*config)
    return _session


def close() -> None:
    global _session
    if _session is not None:
        _session.close()
        _session = None


# --- requests -----------------------------------------------------------------------------------------------------
def submit(scene: bpy.types.Scene, kind: str, params: Any, inputs: dict, rig_name: str = "",
           purpose: str = "") -> str:
    """Send a job; remember its id in the scene (saved with the .blend) and start pumping. ``purpose`` says what a
    fit job's result sets on the rig (portrait or expression)."""
    job_id = session().client.submit(kind, params, inputs)
    state = scene.joker_head
    job = state.jobs.add()
    job.job_id, job.kind, job.state, job.rig_name, job.purpose = job_id, kind, "submitted", rig_name, purpose
    job.message = "sent, waiting for the backend"
    if kind == "generate":
        state.generate_job = job_id
    elif kind == "fit":
        state.fit_job = job_id
    else:
        state.preview_job = job_id
    state.error = state.hint = ""
    ensure_timer()
    return job_id


def cancel(scene: bpy.types.Scene, job_id: str) -> None:
    session().client.cancel(job_id)
    job = find_job(scene, job_id)
    if job is not None:
        job.message = "cancelling..."
    ensure_timer()


def test_connection(scene: bpy.types.Scene) -> None:
    """Start a non-blocking connection test: reconnect and wait (in pump) for the server's welcome."""
    s = session()
    s.client.reconnect("connection test")
    s.ping_sent = time.monotonic()
    for sc in bpy.data.scenes:
        sc.joker_head.status, sc.joker_head.connected = f"contacting {s.config[0]} ...", False
    ensure_timer()


def reattach(scenes=None) -> int:
    """Follow every job the scenes remember that is unfinished or whose result was not saved; returns how many."""
    count = 0
    for scene in scenes or bpy.data.scenes:
        for job in scene.joker_head.jobs:
            if job.state not in P.FINAL_STATES or (job.state == "done" and not Path(job.result_path or "").is_file()):
                if blocked_reason() is not None:
                    return count
                session().client.attach(job.job_id, since=job.last_seq if job.state not in P.FINAL_STATES else 0)
                count += 1
    if count:
        ensure_timer()
    return count


# --- pumping ------------------------------------------------------------------------------------------------------
def pump(timeout_s: float = 0.0) -> Optional[float]:
    """Handle everything that arrived. Returns the next timer interval, or None when nothing is in flight."""
    if _session is None:
        return None
    for msg in _session.client.pump(timeout_s):
        try:
            _handle(msg)
        except Exception as e:  # one bad event must never stop the pump
            _set_error(f"could not handle a {msg.type} message: {e}", "report this with the system console output")
    _check_ping()
    _redraw()
    return POLL_S if _busy() else None


def _busy() -> bool:
    if _session is not None and _session.ping_sent is not None:
        return True
    return any(job.state not in P.FINAL_STATES or (job.state == "done" and not job.result_path)
               for scene in bpy.data.scenes for job in scene.joker_head.jobs)


def _check_ping() -> None:
    s = _session
    if s.ping_sent is not None and time.monotonic() - s.ping_sent > s.config[3]:
        s.ping_sent = None
        _set_status(False, f"no reply from {s.config[0]} in {s.config[3]:.0f} s — is `joker-head serve` running "
                           "there, and are the address and keys right?")


def _handle(msg: P.Message) -> None:
    body = msg.body
    if msg.type == "connected":
        w = body.welcome
        rtt = f", {1000 * (time.monotonic() - _session.ping_sent):.0f} ms" if _session.ping_sent else ""
        _session.ping_sent = None
        _set_status(True, f"connected to {w.server or 'joker-head'} on {', '.join(w.devices) or '?'}{rtt}")
        return
    if msg.type == "disconnected":
        _set_status(False, body.reason)
        return
    job_id = getattr(body, "job", None)
    found = _find(job_id) if job_id else None
    if found is None:
        if msg.type == "error":
            _set_error(body.message, body.hint)
        return
    scene, job = found
    {"accepted": _on_accepted, "progress": _on_progress, "job_state": _on_job_state, "result": _on_result,
     "error": _on_error}.get(msg.type, lambda *a: None)(scene, job, msg)


def _on_accepted(scene, job, msg) -> None:
    job.state = msg.body.state
    job.message = f"queued, {msg.body.position} job(s) ahead" if msg.body.state == "queued" else msg.body.state


def _on_progress(scene, job, msg) -> None:
    b = msg.body
    job.state = "running"
    if b.stage == "warning":  # kept apart: a later step must not wipe it from the panel
        if b.message not in job.warnings.split("\n"):
            job.warnings = "\n".join(filter(None, (job.warnings, b.message)))
        return
    job.stage, job.step, job.total, job.message = b.stage, b.step, b.total, b.message
    job.last_seq = max(job.last_seq, b.seq)
    stage_fraction = b.step / b.total if b.total else 0.0
    job.overall = float(min(1.0, max(0.0, b.metrics.get("overall", stage_fraction))))
    job.eta_s = -1.0 if b.eta_s is None else float(b.eta_s)
    preview = msg.payloads.get("preview")
    if isinstance(preview, P.Png):
        images.write_png(images.PREVIEW_IMAGE if job.kind == "preview" else images.PROGRESS_IMAGE, preview.data)


def _on_job_state(scene, job, msg) -> None:
    if job.state == "done" and msg.body.state != "done":
        return
    job.state = msg.body.state
    job.last_seq = max(job.last_seq, msg.body.last_seq)
    if msg.body.state == "queued":
        job.message = f"queued, {msg.body.position} job(s) ahead"
    elif msg.body.state in ("cancelled", "interrupted"):
        job.message = msg.body.state
    if msg.body.error and not job.error:  # the error message (with its hint) follows; show the reason at once
        job.error = msg.body.error


def _on_error(scene, job, msg) -> None:
    b = msg.body
    job.state = "cancelled" if b.code == "cancelled" else ("failed" if job.state != "done" else job.state)
    job.error, job.hint = b.message or b.code, b.hint
    job.message = b.code


def _on_result(scene, job, msg) -> None:
    from .shared.client import save_result

    paths = save_result(msg, results_dir(job.job_id))
    if job.kind == "fit":
        _on_fit_result(scene, job, msg, paths)
        return
    main = _main_artifact(paths)
    job.state, job.result_path, job.overall, job.eta_s = "done", str(main), 1.0, 0.0
    job.message = "done"
    if job.kind == "preview" and main.suffix == ".png":
        images.write_png(images.PREVIEW_IMAGE, main.read_bytes())
    elif job.kind == "generate" and main.suffix == ".glb" and prefs.get().auto_import:
        import_result(scene, job.job_id)


def _on_fit_result(scene, job, msg, paths: list[Path]) -> None:
    """A fit arrived: show the aligned crop with its landmarks, then set the rig (one undo step)."""
    meta = msg.body.meta or {}
    job.state, job.overall, job.eta_s = "done", 1.0, 0.0
    job.result_path = str(next(p for p in paths if p.name == "meta.json"))
    crop = next((p for p in paths if p.name == "landmarks.png"), None)
    if crop is not None:
        images.write_png(images.ALIGNED_IMAGE, crop.read_bytes())
    summary = (f"fit {meta.get('verdict', '?')}: landmark error {meta.get('residual_mean_px', float('nan')):.1f} px"
               f" at 512\u00b2; face shape from the {meta.get('identity_from', 'landmarks')}")
    job.message = scene.joker_head.fit_summary = summary
    for warning in meta.get("warnings", []):
        if warning not in job.warnings.split("\n"):
            job.warnings = "\n".join(filter(None, (job.warnings, warning)))
    if meta.get("verdict") != "failed":
        apply_fit(scene, job.job_id)


def apply_fit(scene: bpy.types.Scene, job_id: str) -> None:
    """Set the fit on its rig from the pump as one undo step (see :func:`import_result`)."""
    _undoable(scene, lambda: bpy.ops.joker_head.apply_fit(job_id=job_id), "Joker Head fit arrived",
              "Match Portrait" if find_job(scene, job_id).purpose == "portrait" else "Match Expression")


def _main_artifact(paths: list[Path]) -> Path:
    """The file a user wants from a result: the GLB, else the generated image (not the normal map)."""
    ranked = sorted(paths, key=lambda p: (p.suffix != ".glb", p.suffix != ".png", p.name == "normals.png",
                                          p.name not in ("image.png", "preview.png")))
    return ranked[0]


def import_result(scene: bpy.types.Scene, job_id: str) -> None:
    """Import from the pump as its own undo step."""
    _undoable(scene, lambda: bpy.ops.joker_head.import_result(job_id=job_id), "Joker Head result arrived",
              "Import Joker Head")


def _undoable(scene: bpy.types.Scene, op: Any, before: str, after: str) -> None:
    """Run an operator from the pump as its own undo step. Operators called from Python push no undo step
    themselves, so push one before (the scene as the result arrived) and one after; give a timer's context a
    window."""
    def run() -> None:
        bpy.ops.ed.undo_push(message=before)
        op()
        bpy.ops.ed.undo_push(message=after)

    wm = bpy.context.window_manager
    if bpy.context.window is None and wm.windows:
        window = wm.windows[0]
        with bpy.context.temp_override(window=window, screen=window.screen, scene=scene):
            run()
    else:
        run()


def results_dir(job_id: str) -> Path:
    custom = prefs.get().results_dir
    root = Path(bpy.path.abspath(custom)) if custom else Path(
        bpy.utils.extension_path_user(prefs.ADDON_ID, path="results", create=True))
    return root / job_id


def _find(job_id: str):
    for scene in bpy.data.scenes:
        job = find_job(scene, job_id)
        if job is not None:
            return scene, job
    return None


def _set_status(connected: bool, text: str) -> None:
    for scene in bpy.data.scenes:
        scene.joker_head.connected, scene.joker_head.status = connected, text


def _set_error(message: str, hint: str) -> None:
    for scene in bpy.data.scenes:
        scene.joker_head.error, scene.joker_head.hint = message, hint


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in (wm.windows if wm else ()):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


# --- timers and file loading --------------------------------------------------------------------------------------
def _timer() -> Optional[float]:
    return pump()


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=POLL_S, persistent=True)


@persistent
def _on_load(_dummy: Any) -> None:
    """Reopening a .blend reattaches to its jobs: running ones stream on, finished ones deliver their result."""
    try:
        reattach()
    except Exception as e:  # never break file loading
        _set_error(f"could not reattach to the file's jobs: {e}", "check the backend address, then Test Connection")


def register() -> None:
    bpy.app.handlers.load_post.append(_on_load)


def unregister() -> None:
    if _on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load)
    if bpy.app.timers.is_registered(_timer):
        bpy.app.timers.unregister(_timer)
    close()

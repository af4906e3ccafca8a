"""Helpers for the headless Blender tests: build the extension once, install it into an isolated user folder once,
and run bpy scripts in subprocesses (bpy and torch must not share a process) that report JSON back."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.support import free_port

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "bl_ext.user_default.joker_head"
RESULT_TAG = "JOKER_RESULT:"

# Every script starts here: enable the installed extension and expose its modules.
PRELUDE = f"""
import json, sys, time
import numpy as np
import bpy, addon_utils
addon_utils.enable({PACKAGE!r}, default_set=True)
PKG = {PACKAGE!r}
def mod(name):
    import importlib
    return importlib.import_module(PKG + "." + name)
def report(**kw):
    print({RESULT_TAG!r} + json.dumps(kw), flush=True)
def pump_until(cond, timeout, what):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{{what}} did not happen in {{timeout}} s")
        mod("net").pump(timeout_s=0.05)
"""


# The interpreter that runs bpy scripts: this one (bpy 4.5 LTS from the blender extra) unless JOKER_BLENDER_PYTHON
# names another, e.g. a venv with the newest bpy (`make test` runs the Blender tests a second time that way).
BLENDER_PYTHON = os.path.abspath(os.environ.get("JOKER_BLENDER_PYTHON") or sys.executable)  # scripts run elsewhere


@functools.cache
def blender_version() -> Optional[str]:
    """bpy's version string under BLENDER_PYTHON, or None where that interpreter has no bpy."""
    try:
        out = subprocess.run([BLENDER_PYTHON, "-c", "import bpy; print('BLENDER', bpy.app.version_string)"],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = [ln.split(" ", 1)[1] for ln in out.stdout.splitlines() if ln.startswith("BLENDER ")]
    return found[0] if out.returncode == 0 and found else None


def bpy_available() -> bool:
    return blender_version() is not None


def needs_bpy(test):
    """Mark a test as a Blender test (`-m bpy` selects them) that skips, saying why, where no bpy is found."""
    skip = pytest.mark.skipif(not bpy_available(), reason=f"needs bpy under {BLENDER_PYTHON} "
                              "(pip install 'bpy==4.5.*', or set JOKER_BLENDER_PYTHON)")
    return pytest.mark.bpy(skip(test))


def run_bpy(script: str, user_dir: Path, timeout: float = 240, env: Optional[dict] = None,
            prelude: bool = True) -> dict[str, Any]:
    """Run ``script`` with bpy in a subprocess (isolated user resources); return the dict it passed to report()."""
    code = (PRELUDE if prelude else "") + textwrap.dedent(script)
    path = user_dir.parent / f"script-{time.monotonic_ns()}.py"
    path.write_text(code)
    full_env = {**os.environ, "BLENDER_USER_RESOURCES": str(user_dir), "PYTHONPATH": str(REPO), **(env or {})}
    out = subprocess.run([BLENDER_PYTHON, str(path)], capture_output=True, text=True, timeout=timeout, env=full_env,
                         cwd=user_dir.parent)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if out.returncode != 0 or not lines:
        raise AssertionError(f"bpy script failed (rc {out.returncode}):\n--- stdout\n{out.stdout[-4000:]}\n"
                             f"--- stderr\n{out.stderr[-6000:]}")
    return json.loads(lines[-1][len(RESULT_TAG):])


class Backend:
    """`joker-head serve` (or another server command) as a child process on a free loopback port."""

    def __init__(self, jobs_dir: Path, command: Optional[list[str]] = None, env: Optional[dict] = None):
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        cmd = command or [sys.executable, "-m", "backend.cli", "serve"]
        self.log = jobs_dir.parent / "backend.log"
        self.proc = subprocess.Popen(cmd + ["--bind", self.endpoint, "--jobs-dir", str(jobs_dir)], cwd=REPO,
                                     stdout=self.log.open("w"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 60) -> None:
        from shared.client import Client

        deadline = time.monotonic() + timeout
        with Client(self.endpoint, timeout_s=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"backend exited: {self.log.read_text()[-3000:]}")
                try:
                    client.ping(timeout_s=1.0)
                    return
                except TimeoutError:
                    continue
        raise TimeoutError(f"backend not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


TURNTABLE_SCRIPT = Path(__file__).with_name("blender_turntable.py")


def assert_turntable_clean(glb: Path, out_dir: Path, backdrop: Optional[tuple[float, float, float]] = None) -> list:
    """Render ``glb`` as a Cycles turntable (8 azimuths and one view from above: blender_turntable.py) and assert
    every frame shows the head with no hole in its silhouette and no backdrop-coloured head pixels. Returns the
    frames' figures."""
    args = [BLENDER_PYTHON, str(TURNTABLE_SCRIPT), str(glb), str(out_dir)]
    if backdrop is not None:
        args.append(",".join(map(str, backdrop)))
    out = subprocess.run(args, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    frames = json.loads(out.stdout.strip().splitlines()[-1])["frames"]
    assert len(frames) >= 9 and any(fr["elevation"] >= 60 for fr in frames)  # 8 azimuths and one from above
    for fr in frames:
        assert fr["coverage"] > 0.05, fr  # the head is in the frame
        assert fr["holes"] == 0, fr  # no background pixel inside the head's silhouette
        assert fr["backdrop_pixels"] < 0.005, fr  # no backdrop-coloured head pixels
    return frames


def start_backend(tmp_path: Path, models_dir: Optional[Path] = None):
    """The real `joker-head serve` (selftest, preview and generate runners) on a free port.

    ``models_dir`` holds tiny random prior weights in the real layout (tests never download); without it the
    server has none, as on a fresh install.
    """
    models = models_dir or tmp_path / "no-models"
    backend = Backend(tmp_path / "jobs", env={"JOKER_HEAD_MODELS": str(models), "OMP_NUM_THREADS": "1"})
    backend.wait_ready()
    return backend


RIG_SCRIPT = """
    from pathlib import Path
    rig = mod("rig")
    bpy.ops.joker_head.add_rig()
    scene = bpy.context.scene
    obj = scene.joker_head.rig
    model = rig.model_for(obj)
    keys = [kb.name for kb in obj.data.shape_keys.key_blocks]
    obj.location = (0.4, -0.2, 1.1)
    obj.scale = (1.5, 1.5, 1.5)
    bpy.ops.joker_head.apply_preset(preset="smile")
    obj.data.shape_keys.key_blocks["jawOpen"].value = 0.5
    obj.rotation_euler = (0.15, -0.1, 0.3)   # XZY: pitch 0.15, roll 0.1, yaw 0.3
    obj.joker_rig.gaze_yaw, obj.joker_rig.gaze_pitch = 0.25, -0.1
    obj.joker_rig.identity[0].value, obj.joker_rig.identity[5].value = 1.2, -0.8
"""

UI_SCRIPT = """
    # Panels do not draw headless: draw them into a layout that checks every property and operator they name.
    class Layout:
        def __init__(self, log): self.log = log
        def __getattr__(self, name):
            if name in ("row", "column", "box", "split", "grid_flow"):
                return lambda *a, **k: Layout(self.log)
            def call(*args, **kw):
                if name in ("prop", "template_ID", "template_list"):
                    data, prop = (args[0], args[1]) if name != "template_list" else (args[2], args[3])
                    if prop not in data.bl_rna.properties:
                        raise AttributeError(f"{type(data).__name__} has no property {prop}")
                if name in ("operator", "operator_menu_enum"):
                    cat, op = args[0].split(".")
                    getattr(getattr(bpy.ops, cat), op).get_rna_type()
                self.log.append(name + ":" + str(kw.get("text", args[1] if len(args) > 1 and isinstance(args[1], str) else "")))
                return Layout(self.log)
            return call
        def __setattr__(self, name, value):
            object.__setattr__(self, name, value)
    from types import SimpleNamespace
    ui = mod("ui")
    state = scene.joker_head
    job = state.jobs.add()
    job.job_id, job.kind, job.state, job.stage, job.step, job.total, job.overall, job.eta_s = (
        "cd" * 16, "generate", "running", "distill", 3, 10, 0.25, 125.0)
    job.error, job.hint = "out of memory", "choose a smaller preset"
    state.generate_job = job.job_id
    state.prior_mode = "free"  # shows the base-model field too
    mod("images").write_image("Joker Progress", np.zeros((8, 8, 3), np.uint8))
    logs = {}
    for cls in ui.CLASSES:
        log = []
        if cls.poll(bpy.context) if hasattr(cls, "poll") else True:
            cls.draw(SimpleNamespace(layout=Layout(log), draw_job=getattr(cls, "draw_job", None)), bpy.context)
        logs[cls.__name__] = log
    report(logs=logs)
"""

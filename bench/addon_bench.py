"""Add-on interactivity in headless Blender (bpy 4.5): how long a rig slider change takes until the mesh is updated.

Builds the extension zip (cached wheels), installs it into a temporary user folder, adds the ICT rig and times,
each from the property change to the evaluated mesh (depsgraph update done):
    expression   a shape-key slider (Blender evaluates the relative keys)
    identity     an identity slider (update callback: S̄ + B_id α with gaze -> the Basis key)
    gaze         a gaze slider (same path as identity)
    pose         the object's rotation
and, outside the slider target, the live normal-map preview (shared reference renderer, rendered in a worker
thread in the UI) and a request build.
Target: every slider <= 50 ms. Last line:
    addon: expression_ms=... identity_ms=... gaze_ms=... pose_ms=... slider_max_ms=... normal_map_512_ms=... request_ms=...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import build_addon  # noqa: E402

SCRIPT = r"""
import json, statistics, sys, time, importlib
import bpy
r = bpy.ops.extensions.package_install_files(repo="user_default", filepath=ZIP, enable_on_install=True)
mod = lambda n: importlib.import_module("bl_ext.user_default.joker_head." + n)
bpy.ops.joker_head.add_rig()
scene = bpy.context.scene
obj = scene.joker_head.rig
keys = obj.data.shape_keys.key_blocks

def timed(change, n):
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        change(i)
        dg = bpy.context.evaluated_depsgraph_get()  # evaluates what changed
        obj.evaluated_get(dg).data.vertices[0].co    # the evaluated mesh exists
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out)

def set_attr(target, name, value):
    setattr(target, name, value)

figures = {
    "expression_ms": timed(lambda i: set_attr(keys["jawOpen"], "value", 0.1 + 0.8 * (i % 2)), N),
    "identity_ms": timed(lambda i: set_attr(obj.joker_rig.identity[i % 10], "value", 0.5 * (1 + i % 3)), N),
    "gaze_ms": timed(lambda i: set_attr(obj.joker_rig, "gaze_yaw", 0.05 * (i % 5)), N),
    "pose_ms": timed(lambda i: obj.rotation_euler.__setitem__(2, 0.02 * (i % 7)), N),
}
for k in range(20):
    keys[2 + 2 * k].value = 0.3   # a busy face: 20 expressions active
figures["expression_busy_ms"] = timed(lambda i: set_attr(keys["jawOpen"], "value", 0.1 + 0.8 * (i % 2)), N)
scene.joker_head.normal_map_res = 512
t0 = time.perf_counter(); mod("live").render_normal_map(scene); figures["normal_map_512_ms"] = (time.perf_counter() - t0) * 1000
t0 = time.perf_counter(); mod("request").build(scene, "generate"); figures["request_ms"] = (time.perf_counter() - t0) * 1000
print("FIGURES" + json.dumps(figures))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (< 1 minute)")
    args = ap.parse_args()
    n = 7 if args.quick else 31
    with tempfile.TemporaryDirectory(prefix="joker-addon-bench-") as tmp:
        zip_path = Path(tmp) / "joker_head.zip"
        build_addon.build(zip_path)
        script = Path(tmp) / "bench.py"
        script.write_text(f"ZIP = {str(zip_path)!r}\nN = {n}\n" + SCRIPT)
        env = {**os.environ, "BLENDER_USER_RESOURCES": str(Path(tmp) / "user")}
        out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("FIGURES")), None)
    if line is None:
        sys.exit(f"benchmark failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    f = json.loads(line[len("FIGURES"):])
    slider_max = max(f["expression_ms"], f["expression_busy_ms"], f["identity_ms"], f["gaze_ms"], f["pose_ms"])
    print(f"median of {n} changes each; expression with 20 other keys active: {f['expression_busy_ms']:.1f} ms; "
          "target: every slider <= 50 ms")
    print(f"addon: expression_ms={f['expression_ms']:.1f} identity_ms={f['identity_ms']:.1f} "
          f"gaze_ms={f['gaze_ms']:.1f} pose_ms={f['pose_ms']:.1f} slider_max_ms={slider_max:.1f} "
          f"normal_map_512_ms={f['normal_map_512_ms']:.0f} request_ms={f['request_ms']:.0f}")


if __name__ == "__main__":
    main()

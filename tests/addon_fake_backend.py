"""A backend for the add-on's end-to-end test while the real ``generate`` job is not on main yet.

The real server (backend.server.Server, real sockets, real job store) with a stand-in ``generate`` runner: it
streams progress with ETA and previews (the normal map of the vertices it received), honours cancel, and returns a
UV-textured GLB of the received posed mesh in the head frame, like the real export does. A stand-in ``preview``
returns the view's normal map as its image (the real one needs prior weights, which tests never have).

    python tests/addon_fake_backend.py --bind tcp://127.0.0.1:PORT --jobs-dir DIR [--step-s 0.05]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.jobs.selftest import SelftestRunner  # noqa: E402
from backend.runner import Artifact, JobContext, JobFailed, JobResult  # noqa: E402
from backend.server import Server, ServerConfig  # noqa: E402
from shared.conventions import orbit_camera  # noqa: E402
from shared.jobs import JOB_KINDS, GenerateParams, PreviewParams  # noqa: E402
from shared.png import encode_png  # noqa: E402
from shared.raster import render_normal_map  # noqa: E402


def textured_glb(vertices: np.ndarray, faces: np.ndarray) -> bytes:
    """The used part of (vertices [V, 3], faces [F, 3]) as a GLB with planar UVs and a gradient texture."""
    import trimesh
    from PIL import Image

    used = np.unique(faces)
    remap = np.zeros(len(vertices), np.int64)
    remap[used] = np.arange(len(used))
    v = vertices[used]
    uv = (v[:, :2] - v[:, :2].min(0)) / np.ptp(v[:, :2], axis=0)
    tex = np.zeros((64, 64, 3), np.uint8)
    tex[..., 0], tex[..., 1], tex[..., 2] = np.linspace(90, 250, 64)[None], 150, 110
    mesh = trimesh.Trimesh(v, remap[faces], process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(tex)))
    buf = io.BytesIO()
    mesh.export(buf, file_type="glb")
    return buf.getvalue()


class StandInGenerate:
    kind = JOB_KINDS["generate"]
    resumable = False

    def __init__(self, step_s: float):
        self.step_s = step_s

    def run(self, params: GenerateParams, inputs: dict, ctx: JobContext) -> JobResult:
        vertices, faces = inputs["vertices"], inputs["faces"]
        preview = render_normal_map(vertices, faces, orbit_camera(0.0, 0.0, res=64))
        steps = 8
        for step in range(1, steps + 1):
            time.sleep(self.step_s)
            ctx.progress("distill", step, steps, f"step {step}", preview=preview if step % 4 == 0 else None,
                         eta_s=(steps - step) * self.step_s, overall=step / (steps + 1))
        glb = textured_glb(vertices, faces)
        return JobResult({"faces": int(len(faces)), "units": "m", "frame": "head"},
                         [Artifact("result.glb", "model/gltf-binary", glb)])


class StandInPreview:
    """Streams the view's normal map as the denoising preview and returns it, tinted, as image.png; the joker prior
    fails as it does without weights."""

    kind = JOB_KINDS["preview"]
    resumable = False

    def run(self, params: PreviewParams, inputs: dict, ctx: JobContext) -> JobResult:
        if params.prior.mode == "joker":
            raise JobFailed("the joker prior's weights are not installed on this server",
                            "run `joker-head fetch-models --mode joker` on the backend machine", code="missing_weights")
        normals = render_normal_map(inputs["vertices"], inputs["faces"], orbit_camera(params.az_deg, params.el_deg,
                                                                                     res=64))
        for step in range(1, params.steps + 1):
            ctx.progress("denoise", step, params.steps, preview=normals, eta_s=0.0)
        image = (normals // 2 + 60).astype(np.uint8)
        return JobResult({"seed": params.seed}, [Artifact("image.png", "image/png", encode_png(image)),
                                                 Artifact("normals.png", "image/png", encode_png(normals))])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--jobs-dir", type=Path, required=True)
    ap.add_argument("--step-s", type=float, default=0.05)
    args = ap.parse_args()
    config = ServerConfig(bind=args.bind, jobs_dir=args.jobs_dir)
    Server(config, {"selftest": SelftestRunner(), "generate": StandInGenerate(args.step_s),
                          "preview": StandInPreview()}).serve_forever()


if __name__ == "__main__":
    main()

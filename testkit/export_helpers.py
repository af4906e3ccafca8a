"""Helpers shared by the export tests: read a GLB back and compare it with a field."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
import trimesh


def load_glb(glb: bytes) -> trimesh.Trimesh:
    scene = trimesh.load(io.BytesIO(glb), file_type="glb", process=False)
    (mesh,) = scene.geometry.values()
    return mesh


def sample_texture(mesh: trimesh.Trimesh, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random surface points [N, 3] and their bilinearly sampled texture colour [N, 3] in 0..1."""
    rng = np.random.default_rng(seed)
    tex = np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"), dtype=np.float64) / 255.0
    area = mesh.area_faces
    f = rng.choice(len(mesh.faces), count, p=area / area.sum())
    b = rng.dirichlet((1.0, 1.0, 1.0), count)
    pts = np.einsum("nk,nkd->nd", b, mesh.vertices[mesh.faces[f]])
    uv = np.einsum("nk,nkd->nd", b, mesh.visual.uv[mesh.faces[f]])
    H, W = tex.shape[:2]
    x, y = uv[:, 0] * W - 0.5, (1.0 - uv[:, 1]) * H - 0.5
    x0, y0 = np.clip(np.floor(x).astype(int), 0, W - 2), np.clip(np.floor(y).astype(int), 0, H - 2)
    fx, fy = np.clip(x - x0, 0, 1)[:, None], np.clip(y - y0, 0, 1)[:, None]
    c = (tex[y0, x0] * (1 - fx) * (1 - fy) + tex[y0, x0 + 1] * fx * (1 - fy)
         + tex[y0 + 1, x0] * (1 - fx) * fy + tex[y0 + 1, x0 + 1] * fx * fy)
    return pts, c


def field_colour(field, pts: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return field.colour(torch.from_numpy(pts.astype(np.float32))).numpy()


def welded(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The mesh with the UV-seam copies of each vertex merged (seams split vertices in a GLB)."""
    m = trimesh.Trimesh(mesh.vertices.copy(), mesh.faces.copy(), process=False)
    m.merge_vertices(merge_tex=True, merge_norm=True)
    return m


def is_closed(mesh: trimesh.Trimesh) -> bool:
    """Closed and consistently oriented once seam copies are merged: every directed edge a->b is matched by as many
    b->a. (Pinch points that the decimator separated share positions, so an edge may carry two pairs.)"""
    m = welded(mesh)
    d = m.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    fwd = {tuple(e): 0 for e in d}
    for a, b in d:
        fwd[(a, b)] += 1
    return all(fwd.get((b, a), 0) == n for (a, b), n in fwd.items())


GLTF_VALIDATOR = "gltf-validator@2.0.0-dev.3.10"  # the Khronos validator, published on npm
VALIDATOR_DIR = Path(__file__).resolve().parents[1] / "build" / "node"  # `make test` installs it here


def gltf_validator() -> Path:
    """The validator's module folder, installed with npm into build/node (ignored) on first use."""
    module = VALIDATOR_DIR / "node_modules" / "gltf-validator"
    if not module.is_dir():
        if shutil.which("npm") is None:
            raise RuntimeError(f"the glTF validator needs node and npm; install Node.js 18+ and run `npm install "
                               f"--prefix {VALIDATOR_DIR} {GLTF_VALIDATOR}`")
        VALIDATOR_DIR.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(VALIDATOR_DIR),
                              GLTF_VALIDATOR], capture_output=True, text=True, timeout=300)
        if out.returncode != 0 or not module.is_dir():
            raise RuntimeError(f"npm could not install {GLTF_VALIDATOR} into {VALIDATOR_DIR} (npm registry "
                               f"unreachable?): {out.stderr[-500:]}")
    return module


def validate_glb(glb: bytes, tmp_dir: Path) -> dict:
    """The Khronos validator's verdict on GLB bytes: {"errors": int, "warnings": int, "messages": [str]}."""
    path = Path(tmp_dir) / "validate.glb"
    path.write_bytes(glb)
    out = subprocess.run(["node", str(Path(__file__).with_name("gltf_validate.mjs")), str(gltf_validator()),
                          str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])

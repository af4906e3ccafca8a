"""Test support shared by test modules (test modules import this, never each other): the team data paths, tolerances
that hold on any CPU and any thread count, free ports, and small stand-in meshes and normal maps.

Float results of real networks differ between CPUs (SIMD width, reduction order, thread count) by a few ulps per
operation, and those differences grow with depth. A fixed absolute tolerance that holds on one CPU fails on another,
so comparisons here are relative to the expected tensor's scale and sized to the dtype that did the arithmetic.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from shared.conventions import encode_normals

REPO = Path(__file__).resolve().parents[1]
# The team-provided folder beside the checkout (../shared), not our package. Tests that need it skip without it.
SHARED_DATA = Path(os.environ.get("JOKER_SHARED_DATA", REPO.parent / "shared"))
ICT_NPZ = SHARED_DATA / "models" / "ict-facekit" / "ict_facekit_f16.npz"
ICT_SUBSET = SHARED_DATA / "models" / "ict-facekit" / "FaceXModel-subset"

# CUDA tests carry the `gpu` marker; conftest skips them with a reason where no CUDA device is present.
requires_cuda = pytest.mark.gpu

# Relative to the largest magnitude of the expected values. float32: ~800 ulps at the scale, enough for a
# reordered reduction through a deep network, far below any real difference (those show up at 1e-2 and above).
REL_TOL = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}


def _as_float64(x) -> tuple[np.ndarray, str]:
    if hasattr(x, "detach"):  # a torch tensor: record its dtype before leaving torch
        dtype = str(x.dtype).removeprefix("torch.")
        return x.detach().cpu().double().numpy(), dtype
    a = np.asarray(x)
    return a.astype(np.float64), str(a.dtype)


def assert_close(actual, expected, *, rel: float | None = None, name: str = "") -> None:
    """Assert ``|actual - expected| <= rel · max|expected|`` elementwise, compared in float64.

    ``rel`` defaults to ``REL_TOL`` of the less precise of the two dtypes.
    """
    a, da = _as_float64(actual)
    b, db = _as_float64(expected)
    assert a.shape == b.shape, f"{name}: shapes differ: {a.shape} vs {b.shape}"
    if rel is None:
        rel = max(REL_TOL.get(da, 1e-4), REL_TOL.get(db, 1e-4))
    scale = max(float(np.abs(b).max(initial=0.0)), 1e-12)
    err = float(np.abs(a - b).max(initial=0.0))
    assert err <= rel * scale, f"{name}: max |diff| {err:.3g} > {rel:g} × scale {scale:.3g}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for child processes that must bind a fixed one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uv_sphere(radius: float, n_lat: int, n_lon: int, centre=(0.0, 0.0, 0.0)):
    """A closed UV sphere: vertices float64 [V, 3], faces int32 [F, 3] counter-clockwise seen from outside."""
    lat = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    lon = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    ring = np.stack([np.sin(lat)[:, None] * np.sin(lon), np.cos(lat)[:, None] * np.ones_like(lon),
                     np.sin(lat)[:, None] * np.cos(lon)], axis=-1).reshape(-1, 3)
    v = np.concatenate([[[0, 1, 0]], ring, [[0, -1, 0]]]) * radius + np.asarray(centre)
    idx = lambda i, j: 1 + i * n_lon + (j % n_lon)  # noqa: E731
    f = [(0, idx(0, j + 1), idx(0, j)) for j in range(n_lon)]
    for i in range(n_lat - 2):
        for j in range(n_lon):
            a, b, c, d = idx(i, j), idx(i, j + 1), idx(i + 1, j), idx(i + 1, j + 1)
            f += [(a, b, d), (a, d, c)]
    last = len(v) - 1
    f += [(last, idx(n_lat - 2, j), idx(n_lat - 2, j + 1)) for j in range(n_lon)]
    f = np.array(f, dtype=np.int32)
    c = v - np.asarray(centre)
    if np.einsum("ij,ij->i", c[f[:, 0]], np.cross(c[f[:, 1]], c[f[:, 2]])).sum() < 0:  # outward winding
        f = f[:, ::-1].copy()
    return v, f


def sphere_normals(vertices, faces, cameras):
    """A stand-in normal renderer: the analytic normal map of a sphere facing the camera (shared.conventions'
    encoding), uint8 [1, R, R, 3] sized like the first camera; ignores the mesh."""
    res = cameras[0].width
    u = (np.arange(res) + 0.5) / res * 2 - 1
    x, y = np.meshgrid(u, -u)
    mask = x**2 + y**2 < 0.8
    n = np.stack([x, y, np.sqrt(np.clip(1 - x**2 - y**2, 0, 1))], -1)
    return encode_normals(n, mask)[None]


def mesh_inputs(reference: bool = True) -> dict:
    """Minimal job inputs: one triangle, and a random 80x100 reference PNG unless ``reference`` is False."""
    from shared.png import encode_png

    inputs = {"vertices": np.zeros((3, 3), np.float32), "faces": np.array([[0, 1, 2]], np.int32)}
    if reference:
        rng = np.random.default_rng(0)
        inputs["reference"] = encode_png(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8))
    return inputs

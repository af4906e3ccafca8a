"""Test support shared by test modules: tolerances that hold on any CPU and any thread count.

Float results of real networks differ between CPUs (SIMD width, reduction order, thread count) by a few ulps per
operation, and those differences grow with depth. A fixed absolute tolerance that holds on one CPU fails on another,
so comparisons here are relative to the expected tensor's scale and sized to the dtype that did the arithmetic.
"""

from __future__ import annotations

import numpy as np

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

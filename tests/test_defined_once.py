"""Conventions and helpers that several packages use are defined once; these pin the shared definitions' meaning."""

from __future__ import annotations

import numpy as np

from shared.conventions import (BLENDER_TO_HEAD, HEAD_TO_BLENDER, OPENCV_TO_NORMAL_FRAME, blender_to_head,
                                head_to_blender, opencv_to_normal_frame)
from shared.morphable import vertex_normals
from tests.support import assert_close


def test_head_blender_matrices_are_inverse_and_match_the_point_maps():
    p = np.random.default_rng(0).normal(size=(5, 3))
    assert np.array_equal(BLENDER_TO_HEAD @ HEAD_TO_BLENDER, np.eye(4))
    assert np.array_equal(p @ HEAD_TO_BLENDER[:3, :3].T, head_to_blender(p))
    assert np.array_equal(p @ BLENDER_TO_HEAD[:3, :3].T, blender_to_head(p))


def test_normal_frame_flip_turns_opencv_forward_into_toward_the_camera():
    facing = np.array([0.0, 0.0, -1.0])  # a surface facing the camera points along OpenCV -z
    assert np.array_equal(opencv_to_normal_frame(facing), [0.0, 0.0, 1.0])
    assert OPENCV_TO_NORMAL_FRAME == (1.0, -1.0, -1.0)


def test_area_weighting_leans_toward_the_larger_face():
    # Two faces share vertex 0: a large one in the xy-plane (normal +z) and a small one in the xz-plane (normal +y).
    v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float64)
    f = np.array([[0, 1, 2], [0, 3, 4]])
    unit, area = vertex_normals(v, f)[0], vertex_normals(v, f, area_weighted=True)[0]
    assert np.allclose(unit, np.array([0, 1, 1]) / np.sqrt(2), rtol=1e-6)  # each face counts once
    assert area[2] > 0.99 and area.dtype == np.float32  # the 100x larger face dominates


def test_one_loopback_check_for_server_and_add_on():
    from shared.endpoints import is_loopback

    assert all(is_loopback(e) for e in ("tcp://127.0.0.1:5555", "tcp://127.3.2.1:1", "tcp://localhost:9",
                                        "tcp://[::1]:1", "ipc:///tmp/x", "inproc://a"))
    assert not any(is_loopback(e) for e in ("tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://10.0.0.2:5555",
                                            "tcp://localhost.example.com:1", "tcp://eth0:5555"))


def test_one_noise_schedule_equals_diffusers_bit_for_bit():
    import torch
    from diffusers import DDPMScheduler

    from backend.prior.models import SD15_SCHEDULER_CONFIG
    from backend.prior.sampling import alphas_cumprod

    reference = DDPMScheduler.from_config(SD15_SCHEDULER_CONFIG).alphas_cumprod
    assert torch.equal(alphas_cumprod(), reference)
    assert_close(alphas_cumprod(dtype=torch.float64), reference)  # the float64 reference the oracle uses
    linear = {**SD15_SCHEDULER_CONFIG, "beta_schedule": "linear"}  # other schedules: through diffusers
    assert torch.equal(alphas_cumprod(linear), DDPMScheduler.from_config(linear).alphas_cumprod)

"""Cameras and frames: the reference grid, projection, pose/orbit equivalence and the Blender converters."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from shared import conventions as C
from tests.addon_harness import BLENDER_PYTHON, needs_bpy


def test_reference_grid_facts():
    cams = C.reference_grid()
    assert len(cams) == 400
    angles = C.grid_angles()
    assert np.allclose(angles[:20, 0], -45.0) and np.allclose(angles[::20, 1], -20.0)  # az is the outer loop
    assert angles[:, 0].min() == -45.0 and angles[:, 0].max() == 45.0
    assert angles[:, 1].min() == -20.0 and angles[:, 1].max() == 20.0
    for cam in cams:
        assert np.isclose(np.linalg.norm(cam.centre), C.CAMERA_DISTANCE_M)
        uv, z = C.project_points(cam, np.zeros(3))  # every view looks at the origin through its centre
        assert np.allclose(uv, [256.0, 256.0]) and np.isclose(z, C.CAMERA_DISTANCE_M)
    assert abs(C.fov_y_deg(cams[0]) - 13.4) < 0.05


def test_orbit_camera_directions():
    front = C.orbit_camera(0.0, 0.0)
    assert np.allclose(front.centre, [0, 0, 1.0])
    assert C.orbit_camera(45.0, 0.0).centre[0] < 0  # positive azimuth: camera on the subject's right (-x)
    assert C.orbit_camera(0.0, 20.0).centre[1] > 0  # positive elevation: camera above
    uv, _ = C.project_points(front, np.array([[0.05, 0.0, 0.0], [0.0, 0.05, 0.0]]))
    assert uv[0, 0] > 256 and uv[1, 1] < 256  # +x is image right, +y is image up


@pytest.mark.parametrize("az,el", [(30.0, 10.0), (-45.0, -20.0), (12.0, -7.0)])
def test_rotating_the_head_equals_orbiting_the_camera(az, el):
    p = np.random.default_rng(0).normal(scale=0.08, size=(50, 3))
    R = C.euler_to_matrix(np.radians(el), np.radians(az), 0.0)
    uv_posed, z_posed = C.project_points(C.orbit_camera(0.0, 0.0), p @ R.T)
    uv_orbit, z_orbit = C.project_points(C.orbit_camera(az, el), p)
    assert np.allclose(uv_posed, uv_orbit, atol=1e-9) and np.allclose(z_posed, z_orbit)


def test_blender_camera_round_trip_and_shift():
    cam = C.orbit_camera(20.0, -5.0, res=384)
    K = cam.K.copy()
    K[0, 2] += 7.0
    K[1, 2] -= 3.0
    cam = C.Camera(K, cam.c2w, 384, 256)
    bc = C.camera_to_blender(cam)
    back = C.camera_from_blender(bc)
    assert np.allclose(back.K, cam.K) and np.allclose(back.c2w, cam.c2w)
    assert bc.lens_mm == pytest.approx(K[0, 0] * 36.0 / 384)
    with pytest.raises(ValueError, match="square pixels"):
        C.camera_to_blender(C.Camera(np.diag([100.0, 120.0, 1.0]), np.eye(4), 64, 64))


BPY_SCRIPT = r"""
import json, sys
import bpy, mathutils
from bpy_extras.object_utils import world_to_camera_view
d = json.loads(sys.stdin.read())
scene = bpy.context.scene
cam_data = bpy.data.cameras.new("c")
cam = bpy.data.objects.new("c", cam_data)
scene.collection.objects.link(cam)
cam.matrix_world = mathutils.Matrix(d["matrix_world"])
cam_data.lens, cam_data.sensor_width, cam_data.sensor_fit = d["lens_mm"], d["sensor_width_mm"], "AUTO"
cam_data.shift_x, cam_data.shift_y = d["shift_x"], d["shift_y"]
scene.render.resolution_x, scene.render.resolution_y = d["resolution_x"], d["resolution_y"]
scene.render.resolution_percentage = 100
out = []
for p in d["points"]:
    q = world_to_camera_view(scene, cam, mathutils.Vector(p))
    out.append([q.x * d["resolution_x"], (1.0 - q.y) * d["resolution_y"], q.z])
print("RESULT" + json.dumps(out))
"""


@needs_bpy
def test_blender_camera_projects_like_ours():
    """Real bpy (in a subprocess: bpy and torch must not share a process) projects head points where we do."""
    cam = C.orbit_camera(25.0, 10.0, res=320)
    K = cam.K.copy()
    K[0, 2] += 11.0
    K[1, 2] -= 6.0
    cam = C.Camera(K, cam.c2w, 320, 240)
    pts = np.random.default_rng(1).normal(scale=0.07, size=(6, 3))
    bc = C.camera_to_blender(cam)
    payload = dict(matrix_world=bc.matrix_world.tolist(), lens_mm=bc.lens_mm, sensor_width_mm=bc.sensor_width_mm,
                   shift_x=bc.shift_x, shift_y=bc.shift_y, resolution_x=bc.resolution_x,
                   resolution_y=bc.resolution_y, points=C.head_to_blender(pts).tolist())
    run = subprocess.run([BLENDER_PYTHON, "-c", BPY_SCRIPT], input=json.dumps(payload), capture_output=True,
                         text=True, timeout=120)
    line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, run.stderr[-2000:]
    got = np.array(json.loads(line[0][6:]))
    uv, z = C.project_points(cam, pts)
    assert np.allclose(got[:, :2], uv, atol=1e-3)
    assert np.allclose(got[:, 2], z, atol=1e-6)


def test_head_blender_axes():
    p = np.array([[1.0, 2.0, 3.0]])
    assert np.allclose(C.head_to_blender(p), [[1.0, -3.0, 2.0]])
    assert np.allclose(C.blender_to_head(C.head_to_blender(p)), p)
    assert np.allclose((C.HEAD_TO_BLENDER[:3, :3] @ p.T).T, C.head_to_blender(p))


def test_the_projection_jacobian_matches_finite_differences():
    """project_points_jacobian's derivative (the landmark fit, the shading fit and the response model chain it)
    against central differences, in float64, for points around the head seen by a turned grid camera."""
    cam = C.orbit_camera(20.0, -10.0, 512)
    pts = np.random.default_rng(0).normal(0.0, 0.08, (7, 3))
    uv, z, J = C.project_points_jacobian(cam, pts)
    np.testing.assert_array_equal(uv, C.project_points(cam, pts)[0])
    h = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        fd = (C.project_points(cam, pts + e)[0] - C.project_points(cam, pts - e)[0]) / (2 * h)
        np.testing.assert_allclose(J[:, :, k], fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())

"""Normal maps: analytic checks on a sphere, head-turn direction, and numpy/torch parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared import conventions as C
from shared.morphable import MorphableModel
from shared.raster import rasterize, render_normal_map
from tests.support import requires_cuda, uv_sphere


def expected_sphere_colour(cam: C.Camera, radius: float, x: int, y: int) -> np.ndarray:
    """The exact normal-map colour where pixel (x, y)'s ray meets the sphere at the origin."""
    o, d = C.pixel_rays(cam)
    o, d = o[y, x], d[y, x]
    t = -o @ d - np.sqrt((o @ d) ** 2 - (o @ o - radius ** 2))
    n = (o + t * d) / radius
    n_map = C.opencv_to_normal_frame(cam.w2c[:3, :3] @ n)
    return (n_map * 0.5 + 0.5) * 255


@pytest.fixture(scope="module")
def sphere():
    return uv_sphere(0.1, 64, 128)


def test_sphere_normal_map_colours(sphere):
    v, f = sphere
    cam = C.orbit_camera(0.0, 0.0, res=256)
    img = render_normal_map(v, f, cam).astype(float)
    assert np.abs(img[128, 128] - [128, 128, 255]).max() <= 2  # facing the camera
    r_px = cam.K[0, 0] * 0.1 / np.sqrt(1.0 - 0.1 ** 2)  # silhouette radius of the sphere in pixels
    for dx, dy in [(0.7, 0), (-0.7, 0), (0, -0.7), (0, 0.7), (0.5, -0.5)]:
        x, y = int(128 + dx * r_px), int(128 + dy * r_px)
        assert np.abs(img[y, x] - expected_sphere_colour(cam, 0.1, x, y)).max() <= 3, (dx, dy, img[y, x])
    assert img[128, int(128 + 0.7 * r_px), 0] > 200 and img[int(128 - 0.7 * r_px), 128, 1] > 200  # red right, green up
    mask = img.any(-1)
    assert abs(mask.sum() - np.pi * r_px ** 2) / (np.pi * r_px ** 2) < 0.02
    assert (img[~mask] == 0).all() and (img[0, 0] == 0).all()  # black background


def test_nearest_surface_wins():
    near_v, near_f = uv_sphere(0.05, 16, 32, centre=(0.0, 0.0, 0.1))
    far_v, far_f = uv_sphere(0.1, 16, 32)
    cam = C.orbit_camera(0.0, 0.0, res=128)
    for order in (0, 1):  # the draw order must not matter
        parts = [(near_v, near_f), (far_v, far_f)][:: 1 if order else -1]
        v = np.concatenate([parts[0][0], parts[1][0]])
        f = np.concatenate([parts[0][1], parts[1][1] + len(parts[0][0])])
        frag = rasterize(v, f, cam)
        assert abs(frag.depth[64, 64] - (1.0 - 0.15)) < 1e-3


@pytest.fixture(scope="module")
def rig(ict_npz) -> MorphableModel:
    return MorphableModel.load(ict_npz)


@pytest.mark.slow
def test_head_turned_to_its_left_shifts_colours(rig):
    """At the nose tip: turning toward image right (the subject's left, positive yaw) raises red and moves the tip
    right; pitching down lowers green."""
    cam = C.orbit_camera(0.0, 0.0, res=128)
    tip = rig.arrays["landmarks68"][30]

    def at_tip(pose):
        v = rig.evaluate(pose=pose)
        (x, y), _ = C.project_points(cam, v[tip])
        return render_normal_map(v, rig.normal_region_faces, cam)[int(y), int(x)].astype(int), x

    (left, x_left), (front, x_front), (right, x_right) = (at_tip((0.0, yaw, 0.0)) for yaw in (-0.4, 0.0, 0.4))
    assert abs(front[0] - 128) < 15 and front[2] > 240
    assert left[0] < front[0] - 30 and right[0] > front[0] + 20 and x_left < x_front < x_right
    down, _ = at_tip((0.4, 0.0, 0.0))
    assert down[1] < front[1] - 30


@pytest.mark.slow
def test_posing_the_rig_equals_orbiting_the_camera(rig):
    posed = render_normal_map(rig.evaluate(pose=(np.radians(10), np.radians(30), 0.0)), rig.normal_region_faces,
                              C.orbit_camera(0.0, 0.0, res=128))
    orbit = render_normal_map(rig.neutral, rig.normal_region_faces, C.orbit_camera(30.0, 10.0, res=128))
    assert (np.abs(posed.astype(int) - orbit).max(-1) <= 1).mean() > 0.999


def parity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(fraction of pixels within one level, silhouette IoU)."""
    within = (np.abs(a.astype(int) - b.astype(int)).max(-1) <= 1).mean()
    ma, mb = a.any(-1), b.any(-1)
    return within, (ma & mb).sum() / max((ma | mb).sum(), 1)


@pytest.mark.slow
def test_torch_matches_reference_on_the_grid(rig):
    from backend.render import render_normal_maps

    v = rig.evaluate(expressions={"jawOpen": 0.5, "mouthSmile_R": 0.6}, gaze=(0.2, -0.1))
    cams = [C.reference_grid(res=256)[i] for i in (0, 137, 210, 399)]
    out = render_normal_maps(torch.from_numpy(v), torch.from_numpy(rig.normal_region_faces), cams).numpy()
    for i, cam in enumerate(cams):
        within, iou = parity(out[i], render_normal_map(v, rig.normal_region_faces, cam))
        assert within >= 0.999 and iou >= 0.995, (i, within, iou)


def test_torch_fragments_are_geometrically_right(rig):
    """Interpolated camera-space positions reproject onto the pixel centres (perspective-correct barycentrics)."""
    from backend.render import interpolate, rasterize as rasterize_torch

    cams = [C.orbit_camera(20.0, 5.0, res=96), C.orbit_camera(-40.0, -15.0, res=96)]
    v = torch.from_numpy(rig.neutral).double()
    faces = torch.from_numpy(rig.normal_region_faces).long()
    frag = rasterize_torch(v, faces, cams)
    assert frag.face_idx.shape == (2, 96, 96) and frag.face_idx.dtype == torch.long
    hit = frag.mask
    assert torch.allclose(frag.bary[hit].sum(-1), torch.ones(()).double(), atol=1e-9)
    assert (frag.bary[hit] >= -1e-9).all() and (frag.depth[~hit] == 0).all()
    for i, cam in enumerate(cams):
        p_cam = v @ torch.from_numpy(cam.w2c[:3, :3]).T + torch.from_numpy(cam.w2c[:3, 3])
        p = interpolate(type(frag)(frag.face_idx[i:i + 1], frag.bary[i:i + 1], frag.depth[i:i + 1]), faces, p_cam)[0]
        ys, xs = torch.nonzero(hit[i], as_tuple=True)
        q = p[ys, xs]
        u = cam.K[0, 0] * q[:, 0] / q[:, 2] + cam.K[0, 2]
        w = cam.K[1, 1] * q[:, 1] / q[:, 2] + cam.K[1, 2]
        assert torch.allclose(u, xs.double() + 0.5, atol=1e-6) and torch.allclose(w, ys.double() + 0.5, atol=1e-6)
        assert torch.allclose(q[:, 2], frag.depth[i][hit[i]], atol=1e-9)
        ref = rasterize(rig.neutral, rig.normal_region_faces, cam)
        assert (ref.face_idx == frag.face_idx[i].numpy()).mean() > 0.999


def test_chunking_does_not_change_the_result(rig):
    from backend.render.raster import rasterize_sparse

    cams = [C.reference_grid(res=64)[i] for i in (3, 150, 333)]
    v, f = torch.from_numpy(rig.neutral), torch.from_numpy(rig.normal_region_faces).long()
    one = [s for _, s in rasterize_sparse(v, f, cams, views_per_chunk=3)][0].to_dense()
    tiny = [s.to_dense() for _, s in rasterize_sparse(v, f, cams, views_per_chunk=1, max_candidates=50)]
    assert torch.equal(one.face_idx, torch.cat([t.face_idx for t in tiny]))
    assert torch.allclose(one.bary, torch.cat([t.bary for t in tiny]))


def test_mixed_resolutions_are_refused(rig):
    from backend.render import render_normal_maps

    with pytest.raises(ValueError, match="one image size"):
        render_normal_maps(torch.from_numpy(rig.neutral), torch.from_numpy(rig.faces),
                           [C.orbit_camera(0, 0, res=64), C.orbit_camera(0, 0, res=32)])


@requires_cuda
def test_cuda_matches_cpu(rig):
    from backend.render import render_normal_maps

    cams = C.reference_grid(res=256)[::50]
    v, f = torch.from_numpy(rig.neutral), torch.from_numpy(rig.normal_region_faces)
    cpu = render_normal_maps(v, f, cams).numpy()
    gpu = render_normal_maps(v, f, cams, device="cuda").cpu().numpy()
    for a, b in zip(cpu, gpu):
        within, iou = parity(a, b)
        assert within >= 0.999 and iou >= 0.995


@pytest.mark.slow
def test_open_mouth_membrane_shades_smoothly(rig):
    """The weighted lip membrane keeps an open mouth free of stripes (mean horizontal step < 8 levels; listing the
    membrane once gives ~18)."""
    cam = C.orbit_camera(0.0, 0.0, res=256)
    v = rig.evaluate(expressions={"jawOpen": 0.8})
    f = rig.normal_region_faces
    _, inv, count = np.unique(f, axis=0, return_inverse=True, return_counts=True)
    membrane = count[inv.reshape(-1)] > 1
    assert membrane.sum() > 0
    frag = rasterize(v, f, cam)
    inside = frag.mask & membrane[np.maximum(frag.face_idx, 0)]
    assert inside.sum() > 500  # the open mouth is covered, not a hole
    img = render_normal_map(v, f, cam).astype(int)
    pairs = inside[:, 1:] & inside[:, :-1]
    assert np.abs(np.diff(img, axis=1)).max(-1)[pairs].mean() < 8

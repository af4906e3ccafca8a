"""The hash-grid NeRF: tcnn indexing in the torch twin, the blob bias, the bound, the background, the renderer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.field import EnvironmentBackground, HashGrid, HashGridSpec, HeadNeRF, sh_encode
from backend.render.volume import (OccupancyGrid, image_rays, patch_rays, ray_box, render_image, render_rays,
                                   step_size)
from shared.conventions import BLOB_RADIUS_M, JOKER_UNIT_M, NERF_BOUND_RADIUS_M, orbit_camera, pixel_rays
from tests.support import assert_close, requires_cuda

SMALL = HashGridSpec(n_levels=6, n_features=2, log2_table=12, base_res=4, per_level_scale=1.9)


def tcnn_reference(spec: HashGridSpec, table: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """tiny-cuda-nn's grid.h for one point, written as plainly as possible (scalar loops, float64 weights)."""
    offsets, out = spec.offsets(), []
    for level in range(spec.n_levels):
        scale, res, size = spec.scale(level), spec.resolution(level), spec.table_size(level)
        pos = [float(p[d]) * scale + 0.5 for d in range(3)]
        cell = [math.floor(v) for v in pos]
        acc = torch.zeros(spec.n_features, dtype=torch.float64)
        for c in range(8):
            q = [cell[d] + ((c >> d) & 1) for d in range(3)]
            w = math.prod(pos[d] - cell[d] if (c >> d) & 1 else 1 - (pos[d] - cell[d]) for d in range(3))
            stride, index = 1, 0
            for d in range(3):
                if stride > size:
                    break
                index, stride = index + q[d] * stride, stride * res
            if size < stride:
                index = (q[0] * 1 ^ q[1] * 2654435761 ^ q[2] * 805459861) & 0xFFFFFFFF
            acc += w * table[offsets[level] + index % size].double()
        out.append(acc)
    return torch.cat(out)


def test_layout_matches_tcnn_formulas():
    spec = HashGridSpec()  # the reference: 16 x 2, 2^19, base 16, scale 1.447269
    assert spec.resolution(0) == 16 and spec.resolution(15) == 4096
    assert spec.table_size(0) == 16 ** 3 and spec.table_size(15) == 2 ** 19
    assert spec.n_output == 32
    # dense levels while res^3 fits the table, hashed after
    assert [spec.table_size(l) == 2 ** 19 for l in range(16)] == [l >= 5 for l in range(16)]


def test_torch_twin_matches_scalar_tcnn_reference():
    grid = HashGrid(SMALL, "torch")
    grid.params.data.normal_()
    x = torch.rand(40, 3, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0
    x[1] = 1.0  # corners at the far edge of the domain wrap exactly as in tcnn
    got = grid(x).detach().double()
    want = torch.stack([tcnn_reference(SMALL, grid.params.data.view(-1, 2), p) for p in x])
    assert_close(got, want, rel=1e-5)  # float32 grid values against a float64 transcription
    assert {SMALL.table_size(l) < SMALL.resolution(l) ** 3 for l in range(6)} == {True, False}  # both paths hit


def test_hash_grid_gradients_reach_only_touched_entries():
    grid = HashGrid(SMALL, "torch")
    grid(torch.full((1, 3), 0.3)).sum().backward()
    touched = (grid.params.grad != 0).sum().item()
    assert 0 < touched <= 8 * SMALL.n_levels * 2


def test_density_has_blob_bias_and_bound():
    field = HeadNeRF(SMALL, "torch")
    with torch.no_grad():
        field.density_net[-1].weight.zero_()  # raw density 0: what remains is softplus(blob) per metre
    pts = torch.tensor([[0.0, 0.0, 0.0], [BLOB_RADIUS_M, 0.0, 0.0], [0.0, 0.0, NERF_BOUND_RADIUS_M * 1.01]])
    sigma = field.density(pts)
    assert sigma[0] == pytest.approx(math.log1p(math.exp(10.0)) / JOKER_UNIT_M, rel=1e-4)
    assert sigma[1] == pytest.approx(math.log(2.0) / JOKER_UNIT_M, rel=1e-4)
    assert sigma[2] == 0.0  # outside the bound
    rgb = field.colour(torch.zeros(5, 3))
    assert rgb.shape == (5, 3) and bool(((rgb > 0) & (rgb < 1)).all())
    assert all(m.bias is None for m in field.modules() if isinstance(m, torch.nn.Linear))  # bias-free MLPs


def test_sh_encoding_is_tcnn_degree_3():
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    y = sh_encode((d + 1) / 2)
    assert y.shape == (64, 9)
    # real SH of bands 0..2 are orthonormal on the sphere: check with a quadrature of many random directions
    dd = torch.nn.functional.normalize(torch.randn(200_000, 3, dtype=torch.float64), dim=-1)
    Y = sh_encode((dd + 1) / 2).double()
    gram = Y.T @ Y * (4 * math.pi / dd.shape[0])
    assert torch.allclose(gram, torch.eye(9, dtype=torch.float64), atol=0.03)
    assert EnvironmentBackground()(d).shape == (64, 3)


def test_rays_follow_shared_conventions():
    cam = orbit_camera(20.0, -10.0, 24)
    rays = image_rays(cam)
    o, d = pixel_rays(cam)
    assert np.allclose(rays.dirs.numpy(), d.reshape(-1, 3), atol=1e-6)
    assert np.allclose(rays.origins.numpy(), o.reshape(-1, 3), atol=1e-6)
    patch = patch_rays(cam, 5, 7, 4)
    assert np.allclose(patch.dirs.view(4, 4, 3).numpy(), d[7:11, 5:9], atol=1e-6)


def test_ray_box_clips_to_the_bound():
    cam = orbit_camera(0.0, 0.0, 8)
    t_near, t_far, hit = ray_box(image_rays(cam), NERF_BOUND_RADIUS_M)
    assert bool(hit.all())
    centre = image_rays(cam).dirs[4 * 8 + 4]
    assert float(t_near.min()) == pytest.approx(1.0 - NERF_BOUND_RADIUS_M, abs=0.01)
    assert float(t_far.max()) <= 1.0 + NERF_BOUND_RADIUS_M * math.sqrt(3)
    assert float(centre[2]) < -0.99  # the frontal camera looks down -z


def test_render_composites_background_and_depth():
    torch.manual_seed(0)
    field = HeadNeRF(SMALL, "torch")
    cam = orbit_camera(0.0, 0.0, 16)
    with torch.no_grad():
        out = render_image(field, cam, 64)
    assert out["rgb"].shape == (3, 16, 16) and out["opacity"].shape == (16, 16)
    # the initial blob (radius ~10 cm, optical depth ~2.5 through its centre as in the reference) is centred: the
    # middle pixel is mostly covered and its depth lies inside the blob's front half
    assert 0.6 < float(out["opacity"][8, 8]) < 1.0
    assert 1.0 - BLOB_RADIUS_M < float(out["depth"][8, 8]) < 1.0
    # a ray that misses the bound sees only the background
    with torch.no_grad():
        far = render_rays(field, patch_rays(orbit_camera(0.0, 0.0, 16), 0, 0, 1), 64)
    assert float(far["opacity"][0]) < 0.05


def test_occupancy_grid_skips_empty_space_without_changing_the_image():
    torch.manual_seed(0)
    field = HeadNeRF(SMALL, "torch")
    occ = OccupancyGrid(field.radius, 16)
    occ.update(lambda p: field(p, with_colour=False)[0], step_size(field.radius, 64))
    assert 0.02 < occ.occupied.float().mean() < 0.5  # the blob, not the whole cube
    cam = orbit_camera(10.0, 5.0, 16)
    with torch.no_grad():
        a, b = render_image(field, cam, 64)["rgb"], render_image(field, cam, 64, occ)["rgb"]
    assert torch.allclose(a, b, atol=2e-3)


def test_chunked_rendering_equals_one_pass():
    torch.manual_seed(0)
    field = HeadNeRF(SMALL, "torch")
    rays = image_rays(orbit_camera(-15.0, 0.0, 12))
    with torch.no_grad():
        one = render_rays(field, rays, 48, chunk=1 << 20)
        many = render_rays(field, rays, 48, chunk=17)
    assert_close(one["rgb"], many["rgb"])


@requires_cuda
def test_tcnn_and_torch_twins_agree_and_share_weights():
    pytest.importorskip("tinycudann", reason="tinycudann is not installed")
    spec = HashGridSpec()
    ref = HashGrid(spec, "torch").cuda()
    ref.params.data.normal_(0, 0.1)
    fast = HashGrid(spec, "tcnn").cuda()
    fast.load_state_dict(ref.state_dict())  # one key, same layout: a trained table moves between them
    x = torch.rand(4096, 3, device="cuda")
    assert torch.allclose(fast(x), ref(x), atol=1e-4)
    field = HeadNeRF(spec, "torch").cuda()
    moved = HeadNeRF(spec, "tcnn").cuda()
    moved.load_state_dict(field.state_dict())
    p = (torch.rand(4096, 3, device="cuda") - 0.5) * 0.3
    assert torch.allclose(moved.density(p), field.density(p), rtol=1e-3, atol=1e-3)

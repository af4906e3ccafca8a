"""Sparse density sampling (backend.export.sparse): the fine grid only near the surface gives the dense grid's mesh
with a fraction of the field queries, also with thin parts and with the completion's mask."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from backend.export import Completion, export_field, rig_body, surface
from backend.export.grid import Grid, sample_density
from testkit.ict_head import ict_head_field
from backend.export.iso import choose_iso_level
from testkit.reference_fields import SDFField
from backend.export.sparse import coarse_indices, sample_sparse, stride_for
from shared.config.export import ExportConfig
from shared.conventions import reference_grid
from shared.morphable import MorphableModel
from testkit.export_helpers import load_glb


class CountingField:
    """Wraps a field and counts the density queries."""

    def __init__(self, field):
        self.field, self.queries = field, 0
        self.device = torch.device("cpu")

    def density(self, p: torch.Tensor) -> torch.Tensor:
        self.queries += len(p)
        return self.field.density(p)

    def colour(self, p: torch.Tensor) -> torch.Tensor:
        return self.field.colour(p)


class FinnedSphere(SDFField):
    """A sphere with a 3 mm thin fin (an ear's rim) sticking 4 cm out of its side: thinner than the coarse grid."""

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        ball = torch.linalg.norm(p, dim=-1) - 0.08
        q = (p - torch.tensor([0.09, 0.0, 0.0])).abs() - torch.tensor([0.03, 0.02, 0.0015])
        fin = torch.linalg.norm(q.clamp(min=0), dim=-1) + q.max(dim=-1).values.clamp(max=0)
        return torch.minimum(ball, fin)


class DebrisBehindField:
    """The true head, its back replaced by wispy debris reaching the bound (what frontal views leave there)."""

    device = torch.device("cpu")

    def __init__(self, head):
        self.head = head

    def density(self, p: torch.Tensor) -> torch.Tensor:
        back = p[:, 2] < -0.08
        debris = 3000.0 * (torch.sin(90 * p[:, 0]) * torch.sin(70 * p[:, 1]) > 0.7)
        return torch.where(back, debris, self.head.density(p))

    def colour(self, p: torch.Tensor) -> torch.Tensor:
        return self.head.colour(p)


def choose(grid: Grid):
    return lambda s: (choose_iso_level(s, grid.spacing).level, {})


def dense_and_sparse(field, resolution: int):
    grid = Grid(resolution)
    counted = CountingField(field)
    dense = sample_density(field, grid, 1 << 18)
    sparse = sample_sparse(counted, grid, 1 << 18, choose(grid))
    return grid, dense, sparse, counted.queries


@pytest.mark.parametrize("make", [lambda npz: ict_head_field(npz, resolution=96), lambda npz: FinnedSphere()],
                         ids=["ict_head", "thin_fin"])
def test_sparse_sampling_gives_the_dense_mesh_with_far_fewer_queries(make, ict_npz):
    grid, dense, sparse, queries = dense_and_sparse(make(ict_npz), 128)
    assert stride_for(grid) == 2 and sparse.info["sample_stride"] == 2
    level = choose_iso_level(dense, grid.spacing).level
    assert sparse.level == pytest.approx(level, rel=1e-3)  # the level is chosen on the refined densities
    assert queries == sparse.info["sample_points"] < 0.3 * 128 ** 3  # the coarse grid alone is 1/8 of it
    # near the level the densities are the field's own, so marching cubes gives the same surface
    near = (dense > level / 10) & (dense < level * 2)
    np.testing.assert_array_equal(sparse.sigma[near], dense[near])
    assert ((sparse.sigma > level) == (dense > level)).all()
    va, fa = surface.marching_cubes(dense, level, grid)
    vb, fb = surface.marching_cubes(sparse.sigma, level, grid)
    assert len(fa) == len(fb) > 1000
    assert cKDTree(vb).query(va)[0].max() < 0.05 * grid.spacing


def test_coarse_indices_cover_both_ends():
    assert coarse_indices(256, 4).tolist()[:3] == [0, 4, 8] and coarse_indices(256, 4)[-2:].tolist() == [252, 255]
    assert coarse_indices(9, 4).tolist() == [0, 4, 8]
    assert stride_for(Grid(64)) == 1 and stride_for(Grid(256)) == 4


def test_dense_grids_stay_dense():
    grid, dense, sparse, queries = dense_and_sparse(FinnedSphere(), 64)
    assert queries == 64 ** 3 and sparse.info["sample_fraction"] == 1.0
    np.testing.assert_array_equal(sparse.sigma, dense)


@pytest.mark.slow
def test_completed_export_is_the_same_sparse_or_dense(ict_npz):
    """With a completion the field is refined only where it has a say (w > 0): the same head as dense sampling."""
    model = MorphableModel.load(ict_npz)
    completion = Completion(rig_body(model, model.evaluate().astype(np.float64)), reference_grid(64, 8, 5))
    field = DebrisBehindField(ict_head_field(ict_npz, resolution=96))
    out = {}
    for mode in ("dense", "sparse"):
        counted = CountingField(field)
        r = export_field(counted, ExportConfig(resolution=128, faces=20_000, texture=256, sampling=mode),
                         completion=completion)
        out[mode] = (load_glb(r.glb), r.meta, counted.queries)
    (a, ma, qa), (b, mb, qb) = out["dense"], out["sparse"]
    assert qa == 128 ** 3 and qb < 0.2 * qa and mb["sample_fraction"] < 0.2
    assert mb["open_edges"] == 0 and mb["kept_components"] == 1
    assert mb["iso_level"] == pytest.approx(ma["iso_level"], rel=0.05)
    h = Grid(128).spacing
    pts = a.sample(5000, seed=0)
    q, face = b.sample(200_000, return_index=True, seed=1)
    _, j = cKDTree(q).query(pts)
    d = np.abs(np.einsum("ij,ij->i", pts - q[j], b.face_normals[face[j]]))  # point to tangent plane of b
    assert np.percentile(d, 99) < 0.25 * h and d.max() < h, (np.percentile(d, 99) / h, d.max() / h)


def test_guard_fills_pits_removes_thin_debris_keeps_thick_added_volume():
    """The field's surface wins where the views looked, but not with a NeRF's pits and porous debris."""
    from backend.export.complete import guard_field

    grid = Grid(96)
    ax = grid.axis()
    x, y, z = np.meshgrid(ax, ax, ax, indexing="ij")
    r = np.sqrt(x * x + y * y + z * z)
    rig = (r - 0.08).astype(np.float32)
    pit = np.sqrt((x - 0.08) ** 2 + y * y + z * z) - 0.015  # a 15 mm hole into the side of the head
    plate = np.maximum(np.abs(y + 0.09) - 0.001, np.maximum(np.abs(x) - 0.03, np.abs(z) - 0.03))  # 2 mm sheet
    hair = np.maximum(r - 0.1, -y + 0.04)  # a 2 cm thick cap on top
    field = np.minimum(np.minimum(np.maximum(rig, -pit), plate), hair).astype(np.float32)
    out = guard_field(field.copy(), rig, grid)

    def inside(phi, p):
        i = np.round((np.asarray(p) + grid.bound) / grid.spacing).astype(int)
        return phi[tuple(i)] < 0

    assert not inside(field, (0.07, 0, 0)) and inside(out, (0.07, 0, 0))  # the pit is filled
    assert inside(field, (0, -0.09, 0.02)) and not inside(out, (0, -0.09, 0.02))  # the sheet is gone
    assert inside(field, (0, 0.09, 0)) and inside(out, (0, 0.09, 0))  # the cap of hair stays
    assert inside(out, (-0.07, 0, 0)) and not inside(out, (0.0, 0.0, 0.11))

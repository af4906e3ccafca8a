"""Completion: a field that only knows the front of the head (debris and background colour behind, as a distillation
from frontal views leaves it) exported with the rig's completion is one closed head, right and textured all around,
and valid glTF. Also: the view range is a config knob, normals are never of zero length."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial import cKDTree
from scipy.special import expit

from backend.export import Completion, export_field, rig_body
from backend.export.complete import seen_weight, surface_thickness, vertex_visibility
from backend.export.grid import Grid
from backend.export.fill import harmonic_fill
from testkit.ict_head import ict_head_field
from testkit.reference_fields import SphereField
from shared.morphable import vertex_normals
from shared.config import DistillConfig
from shared.config.export import ExportConfig
from shared.conventions import grid_angles, reference_grid
from shared.morphable import MorphableModel
from shared.spec import SpecError, from_dict
from tests.addon_harness import assert_turntable_clean, needs_bpy
from testkit.export_helpers import is_closed, load_glb, sample_texture, validate_glb, welded

BACKDROP = np.array([0.05, 0.9, 0.05])  # a backdrop the field's pattern never comes near (its chromaticity <= 0.57)


def unseen(p):
    """bool [N]: the back of the skull, which no view of the reference grid sees (ears and neck sides excluded)."""
    return (p[:, 2] < -0.08) & (p[:, 0].abs() < 0.05) if isinstance(p, torch.Tensor) else \
        (p[:, 2] < -0.08) & (np.abs(p[:, 0]) < 0.05)


class FrontOnlyField:
    """The true head except the back of the skull, and what frontal views leave there: no surface, wispy debris
    reaching the NeRF's bound, and the backdrop's colour."""

    def __init__(self, head):
        self.head = head

    def density(self, p: torch.Tensor) -> torch.Tensor:
        known = self.head.density(p) * ~unseen(p)
        debris = 3000.0 * (torch.sin(90 * p[:, 0]) * torch.sin(70 * p[:, 1]) > 0.7) * unseen(p)  # attached
        return known + debris

    def colour(self, p: torch.Tensor) -> torch.Tensor:
        c = self.head.colour(p)
        return torch.where(unseen(p)[:, None], torch.tensor(BACKDROP, dtype=c.dtype), c)


@pytest.fixture(scope="module")
def rig(ict_npz):
    model = MorphableModel.load(ict_npz)
    return model, model.evaluate().astype(np.float64)


@pytest.fixture(scope="module")
def completed(rig, ict_npz, tmp_path_factory):
    model, vertices = rig
    head = ict_head_field(ict_npz, resolution=96)
    field = FrontOnlyField(head)
    cams = reference_grid(64, 8, 5)
    result = export_field(field, ExportConfig(resolution=96, faces=10_000, texture=512),
                          completion=Completion(rig_body(model, vertices), cams))
    path = tmp_path_factory.mktemp("complete") / "head.glb"
    path.write_bytes(result.glb)
    return head, result, path


def skin(model, vertices: np.ndarray, count: int = 20_000) -> np.ndarray:
    import trimesh

    keep = model.region_mask("face", "head_neck")
    mesh = trimesh.Trimesh(vertices, model.faces[keep[model.faces].all(axis=1)], process=False)
    return trimesh.sample.sample_surface(mesh, count, seed=0)[0]


def test_completed_head_is_one_closed_component_on_the_rig_all_around(completed, rig):
    _, result, _ = completed
    model, vertices = rig
    m = result.meta
    assert m["completed"] and m["open_edges"] == 0 and m["kept_components"] == 1
    mesh = welded(load_glb(result.glb))
    assert is_closed(mesh) and mesh.is_watertight and mesh.volume > 0  # manifold even when welded by position
    assert len(mesh.split(only_watertight=False)) == 1
    # the debris behind the head (reaching the NeRF's bound) is gone: the mesh stays within the rig's extent
    body = np.concatenate([v for v, _ in rig_body(model, vertices)])
    assert (mesh.bounds[0] > body.min(0) - 0.005).all() and (mesh.bounds[1] < body.max(0) + 0.005).all()
    pts = skin(model, vertices)
    d = cKDTree(mesh.sample(40_000)).query(pts)[0]
    back = unseen(pts)  # the rig alone (4.4 mm cells in this test)
    assert back.sum() > 2000
    assert (d[back] < 0.0045).mean() > 0.95, (d[back] < 0.0045).mean()
    assert (d < 0.0045).mean() > 0.95, (d < 0.0045).mean()


def test_texture_has_no_backdrop_colour_and_a_visibility_map(completed):
    head, result, _ = completed
    mesh = load_glb(result.glb)
    pts, c = sample_texture(mesh, 6000)
    # no texel of the head keeps the backdrop's colour, though the field is backdrop-blue behind the ears
    is_blue = np.abs(c - BACKDROP).max(axis=1) < 0.12
    assert is_blue.mean() < 0.005, is_blue.mean()
    front = (pts[:, 2] > 0.0) & (np.abs(pts[:, 0]) < 0.05)  # the face, seen head-on: the field's own colours
    assert front.sum() > 300
    with torch.no_grad():
        truth = head.colour(torch.from_numpy(pts[front].astype(np.float32))).numpy()
    assert np.abs(c[front] - truth).mean() < 0.05
    vis = np.asarray(Image.open(io.BytesIO(result.files["visibility.png"])))
    assert vis.shape == (512, 512) and vis.max() == 255 and vis.min() == 0  # seen and unseen texels both exist
    assert 0.1 < result.meta["seen_vertex_fraction"] < 0.7


def test_completed_glb_passes_the_khronos_validator(completed, tmp_path):
    _, result, _ = completed
    report = validate_glb(result.glb, tmp_path)
    assert report["errors"] == 0, report["messages"]


def test_plain_export_passes_the_khronos_validator(tmp_path):
    result = export_field(SphereField(0.1), ExportConfig(resolution=48, faces=2000, texture=256))
    report = validate_glb(result.glb, tmp_path)
    assert report["errors"] == 0, report["messages"]


def test_vertex_normals_are_unit_even_for_degenerate_fans():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 2, 2], [5, 5, 5]], float)
    f = np.array([[0, 1, 2], [3, 3, 3]])  # a zero-area face; vertex 4 is unreferenced
    n = vertex_normals(v, f, area_weighted=True)
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(n[0], [0, 0, 1], atol=1e-6)


def test_harmonic_fill_keeps_seen_colours_and_interpolates_across_the_unseen():
    # a strip of 10 x 2 vertices: the ends seen (red / blue), the middle not
    xs = np.arange(10)
    v = np.array([(x, y, 0.0) for x in xs for y in (0, 1)], float)
    f = np.array([[2 * i, 2 * i + 2, 2 * i + 1] for i in range(9)] + [[2 * i + 1, 2 * i + 2, 2 * i + 3]
                                                                        for i in range(9)])
    seen = np.where((v[:, 0] == 0) | (v[:, 0] == 9), 1.0, 0.0)
    c = np.zeros((len(v), 3))
    c[v[:, 0] == 0] = (1, 0, 0)
    c[v[:, 0] == 9] = (0, 0, 1)
    c[(v[:, 0] > 0) & (v[:, 0] < 9)] = (0, 1, 0)  # what the field says where nobody looked: ignored
    out = harmonic_fill(len(v), f, c, seen)
    np.testing.assert_allclose(out[v[:, 0] == 0], [[1, 0, 0]] * 2, atol=1e-2)
    np.testing.assert_allclose(out[v[:, 0] == 9], [[0, 0, 1]] * 2, atol=1e-2)
    mid = out[v[:, 0] == 4].mean(0)
    assert mid[1] < 1e-3 and 0.4 < mid[0] < 0.65 and abs(mid[0] + mid[2] - 1.0) < 1e-2  # a blend, no green


def test_visibility_sees_the_face_not_the_back(rig):
    model, vertices = rig
    body = rig_body(model, vertices)
    v, f = body[0]
    import trimesh

    n = trimesh.Trimesh(v, f, process=False).vertex_normals
    vis = vertex_visibility(v, f, n, reference_grid(64, 8, 5))
    w = seen_weight(vis)
    nose = np.argmax(v[:, 2])
    back = v[:, 2] < v[:, 2].min() + 0.03
    assert vis[nose] > 0.9 and w[nose] == 1.0
    assert vis[back].max() < 0.2 and w[back].max() == 0.0


def test_view_range_is_a_distill_config_knob():
    default = DistillConfig(preset="draft").resolved()
    assert (default.view_az_deg, default.view_el_deg) == (45.0, 20.0)  # the reference's
    wide = from_dict(DistillConfig, {"preset": "draft", "view_az_deg": 120, "view_el_deg": 35})
    r = wide.resolved()
    angles = grid_angles(r.n_az, r.n_el, r.view_az_deg, r.view_el_deg)
    assert angles[:, 0].min() == -120.0 and angles[:, 0].max() == 120.0 and angles[:, 1].max() == 35.0
    cams = reference_grid(64, r.n_az, r.n_el, r.view_az_deg, r.view_el_deg)
    assert cams[0].centre[2] < 0  # azimuth 120°: the first camera looks from behind the ear
    with pytest.raises(SpecError, match="view_az_deg"):
        from_dict(DistillConfig, {"preset": "draft", "view_az_deg": 270})


@needs_bpy
@pytest.mark.slow
def test_completed_head_turntable_in_cycles_has_no_holes_or_backdrop(completed, tmp_path):
    _, _, path = completed
    assert_turntable_clean(path, tmp_path, tuple(BACKDROP))


SKY = torch.tensor([0.55, 0.75, 0.95])  # the field's learnt backdrop (light blue, as the demo's)


class BackdropInTheEyesField:
    """The true head whose eye sockets (concave, seen head-on) carry the backdrop's colour, as a NeRF learns it
    there: the views showed the background through them."""

    def __init__(self, head, eyes: np.ndarray):
        self.head, self.eyes = head, torch.from_numpy(eyes.astype(np.float32))

    def density(self, p: torch.Tensor) -> torch.Tensor:
        return self.head.density(p)

    def colour(self, p: torch.Tensor) -> torch.Tensor:
        near = torch.cdist(p.float(), self.eyes).min(dim=1).values < 0.018
        return torch.where(near[:, None], SKY.to(p.dtype), self.head.colour(p))

    def background(self, d: torch.Tensor) -> torch.Tensor:  # a slightly direction-dependent sky
        return (SKY + 0.03 * d).clamp(0, 1)


@pytest.mark.slow
def test_backdrop_coloured_specks_are_treated_as_unseen_and_filled(rig, ict_npz):
    model, vertices = rig
    eyes = np.stack([vertices[model.region_mask(e)].mean(0) for e in ("eyeball_L", "eyeball_R")])
    field = BackdropInTheEyesField(ict_head_field(ict_npz, resolution=96), eyes)
    cfg = ExportConfig(resolution=96, faces=10_000, texture=512)
    body, cams = rig_body(model, vertices), reference_grid(64, 8, 5)

    def bluish_near_eyes(result) -> float:
        pts, c = sample_texture(load_glb(result.glb), 20_000)
        near = cKDTree(eyes).query(pts)[0] < 0.016
        assert near.sum() > 50
        return float((np.linalg.norm(c[near] - SKY.numpy(), axis=1) < 0.1).mean())

    plain = export_field(field, cfg, completion=Completion(body, cams))
    assert bluish_near_eyes(plain) > 0.3  # without the background model the backdrop is baked in
    result = export_field(field, cfg, completion=Completion(body, cams, background=field.background))
    assert bluish_near_eyes(result) < 0.02
    assert 0.0 < result.meta["background_share"] < 0.1 and "background_note" not in result.meta
    # the rest of the face keeps the field's colours
    pts, c = sample_texture(load_glb(result.glb), 6000)
    front = (pts[:, 2] > 0.0) & (np.abs(pts[:, 0]) < 0.05) & (cKDTree(eyes).query(pts)[0] > 0.03)
    with torch.no_grad():
        truth = field.head.colour(torch.from_numpy(pts[front].astype(np.float32))).numpy()
    assert front.sum() > 300 and np.abs(c[front] - truth).mean() < 0.05


class HairAndFogField:
    """The true head plus two kinds of volume the rig lacks, over the two halves of the forehead: a crisp 10 mm
    shell (hair, as a converged distillation draws it) and a fog that starts 12 mm out and thickens over ~3 cm (an
    unconverged blob: opaque, but with no resolved surface)."""

    def __init__(self, head, sharpness_m: float = 0.008):
        self.head, self.fog_beta = head, sharpness_m

    def density(self, p: torch.Tensor) -> torch.Tensor:
        d = self.head.sdf(p)
        upper = torch.sigmoid((p[:, 1] - 0.04) / 0.003)
        hair = 4000.0 * torch.sigmoid(-(d - 0.010) / 0.0005) * torch.sigmoid((p[:, 0] - 0.015) / 0.001) * upper
        fog = 4000.0 * torch.sigmoid(-(d - 0.012) / self.fog_beta) * torch.sigmoid((-p[:, 0] - 0.015) / 0.003) * upper
        return torch.maximum(self.head.density(p), torch.maximum(hair, fog))

    def colour(self, p: torch.Tensor) -> torch.Tensor:
        return self.head.colour(p)


def test_surface_thickness_tells_a_resolved_surface_from_a_fog():
    grid = Grid(96)
    ax = grid.axis()
    r = np.sqrt(sum(c * c for c in np.meshgrid(ax, ax, ax, indexing="ij")))
    points = np.array([[0.0, 0.0, 0.1], [0.1, 0.0, 0.0], [0.0, -0.0707, 0.0707]])
    rays = -points / np.linalg.norm(points, axis=1, keepdims=True)  # head-on, camera -> point
    for beta, lo, hi in ((0.0005, 0.0, 2.0 * grid.spacing), (0.008, 0.02, np.inf)):
        sigma = (4000.0 * expit(-(r - 0.1) / beta)).astype(np.float32)
        t = surface_thickness(sigma, grid, points, rays)
        assert ((t >= lo) & (t <= hi)).all(), (beta, t)
    empty = surface_thickness(np.full((96,) * 3, 1.0, np.float32), grid, points, rays)  # never opaque
    assert np.isinf(empty).all()


@pytest.mark.slow
def test_field_wins_where_its_surface_is_resolved_the_rig_where_it_is_fog(rig, ict_npz):
    """Seen and crisp (hair): the field's surface; seen but unresolved (a fog in front of the forehead): the rig."""
    import trimesh

    model, vertices = rig
    field = HairAndFogField(ict_head_field(ict_npz, resolution=128))
    result = export_field(field, ExportConfig(resolution=128, faces=20_000, texture=256),
                          completion=Completion(rig_body(model, vertices), reference_grid(64, 8, 5)))
    m = result.meta
    assert m["open_edges"] == 0 and m["kept_components"] == 1 and 0.0 < m["field_resolved_fraction"] < 1.0
    mesh = load_glb(result.glb)
    keep = model.region_mask("face")
    face = trimesh.Trimesh(vertices, model.faces[keep[model.faces].all(axis=1)], process=False)
    pts, fi = trimesh.sample.sample_surface(face, 40_000, seed=0)
    q, qf = mesh.sample(200_000, return_index=True, seed=1)
    dist, j = cKDTree(q).query(pts)
    outward = np.einsum("ij,ij->i", q[j] - pts, face.face_normals[fi])  # > 0: the mesh lies outside the rig
    forehead = (pts[:, 1] > 0.055) & (pts[:, 1] < 0.09) & (pts[:, 2] > -0.02)
    hair, fog = forehead & (pts[:, 0] > 0.03), forehead & (pts[:, 0] < -0.03)
    assert hair.sum() > 200 and fog.sum() > 200
    assert np.median(outward[hair]) > 0.007, np.median(outward[hair])  # the 10 mm hair shell is kept
    assert (dist[fog] < Grid(128).spacing).mean() > 0.95, (dist[fog] < Grid(128).spacing).mean()  # the rig's skin

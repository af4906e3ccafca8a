"""Export on analytic fields: geometry and colour against known answers, clean-up, config and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.export import export_field
from backend.export.iso import LN2
from testkit.reference_fields import BETA_M, SIGMA_S, BoxField, SDFField, SphereField
from backend.export.errors import ExportError
from shared.config.export import ExportConfig
from shared.spec import SpecError, from_dict
from testkit.export_helpers import field_colour, is_closed, load_glb, sample_texture, welded

SMALL = dict(resolution=64, faces=4000, texture=256)  # 6.6 mm cells: fast, still a fair test


def renderer_radius(radius: float) -> float:
    """Where a frontal ray through sigma_s·sigmoid(-d/beta) reaches optical depth ln 2 (its median depth)."""
    return radius - BETA_M * np.log(np.expm1(LN2 / (SIGMA_S * BETA_M)))


@pytest.fixture(scope="module")
def sphere_export():
    field = SphereField(0.1, centre=(0.0, 0.01, 0.0))
    return field, export_field(field, ExportConfig(**SMALL, format="glb+obj"))


def test_sphere_geometry_matches_the_rendered_surface(sphere_export):
    field, result = sphere_export
    mesh = load_glb(result.glb)
    closed = welded(mesh)
    assert closed.is_watertight and closed.is_winding_consistent and closed.volume > 0  # outward normals
    assert len(closed.split(only_watertight=False)) == 1
    r = np.linalg.norm(mesh.vertices - np.array([0.0, 0.01, 0.0]), axis=1)
    # tolerance: 1 mm mean, 2 mm worst at 6.6 mm cells (0.15 and 0.3 cells)
    assert abs(r.mean() - renderer_radius(0.1)) < 1e-3
    assert np.abs(r - renderer_radius(0.1)).max() < 2e-3
    assert abs(closed.volume - 4 / 3 * np.pi * renderer_radius(0.1) ** 3) / closed.volume < 0.03


def test_sphere_texture_reproduces_the_colour_pattern(sphere_export):
    field, result = sphere_export
    mesh = load_glb(result.glb)
    pts, c = sample_texture(mesh, 4000)
    err = np.abs(c - field_colour(field, pts))
    assert err.mean() < 0.03, err.mean()  # 8-bit texels, 256² texture, bilinear lookup
    assert np.percentile(err, 99) < 0.15


def test_meta_states_units_frame_and_size(sphere_export):
    _, result = sphere_export
    m = result.meta
    assert m["units"] == "m" and "+Y up" in m["frame"] and m["texture"] == [256, 256]
    assert m["faces"] <= 4000 and m["faces"] == len(load_glb(result.glb).faces)
    assert m["iso_source"] == "auto" and m["iso_level"] > 0
    assert set(m["timings_s"]) >= {"sample", "iso", "marching_cubes", "clean", "decimate", "unwrap", "bake", "total"}
    assert result.glb[:4] == b"glTF"


def test_obj_option_writes_obj_mtl_png(sphere_export):
    _, result = sphere_export
    files = result.files
    assert set(files) == {"joker_head.obj", "joker_head.mtl", "joker_head.png"}
    assert b"map_Kd joker_head.png" in files["joker_head.mtl"] and files["joker_head.png"][:4] == b"\x89PNG"
    text = files["joker_head.obj"].decode()
    n_f = sum(1 for line in text.splitlines() if line.startswith("f "))
    assert n_f == result.meta["faces"] and "mtllib joker_head.mtl" in text


def test_box_extent_and_volume():
    half = (0.08, 0.12, 0.06)
    result = export_field(BoxField(half), ExportConfig(**SMALL))
    mesh = welded(load_glb(result.glb))
    r_out = renderer_radius(0.0)  # the rendered surface sits this far outside the box faces
    ext = (mesh.bounds[1] - mesh.bounds[0]) / 2
    np.testing.assert_allclose(ext, np.array(half) + r_out, atol=1.5e-3)
    assert abs(mesh.volume / np.prod(2 * (np.array(half) + r_out)) - 1) < 0.06  # edges and corners round off at 6.6 mm cells


class Scene(SDFField):
    """A head-sized sphere, a small floater, a hollow cavity inside it and a slab of 'background' at the bound."""

    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        head = torch.linalg.norm(p, dim=-1) - 0.09
        cavity = 0.03 - torch.linalg.norm(p - torch.tensor([0.0, 0.0, 0.02]), dim=-1)
        floater = torch.linalg.norm(p - torch.tensor([0.15, 0.15, 0.0]), dim=-1) - 0.008
        background = 0.19 - p[:, 2]  # everything beyond z = 0.19 m (touches the bound)
        return torch.minimum(torch.minimum(torch.maximum(head, cavity), floater), background)


def test_keeps_the_head_and_drops_floaters_cavities_and_background():
    result = export_field(Scene(), ExportConfig(**SMALL))
    mesh = load_glb(result.glb)
    assert result.meta["components"] == 4 and result.meta["kept_components"] == 1
    assert is_closed(mesh)
    assert np.abs(mesh.vertices).max() < 0.1 and np.linalg.norm(mesh.vertices, axis=1).min() > 0.08


def test_iso_override_is_used():
    field = SphereField(0.1)
    level = SIGMA_S / 2  # exactly the zero level of the signed distance
    result = export_field(field, ExportConfig(**SMALL, iso=level))
    assert result.meta["iso_source"] == "override" and result.meta["iso_level"] == level
    r = np.linalg.norm(load_glb(result.glb).vertices, axis=1)
    assert abs(r.mean() - 0.1) < 2e-3  # a sharp rim (0.5 mm) between 6.6 mm samples: 0.3 cells
    assert r.mean() < renderer_radius(0.1)  # a higher level than the renderer's surface lies inside it


class Empty(SDFField):
    def sdf(self, p: torch.Tensor) -> torch.Tensor:
        return torch.full(p.shape[:1], 1.0)


def test_empty_field_fails_with_a_hint():
    with pytest.raises(ExportError) as e:
        export_field(Empty(), ExportConfig(**SMALL))
    assert "empty" in str(e.value) and e.value.hint


def test_progress_reports_every_stage_and_can_cancel():
    seen = []
    export_field(SphereField(0.08), ExportConfig(resolution=48, faces=1000, texture=256),
                 progress=lambda s, i, n: seen.append(s))
    assert [s for s in dict.fromkeys(seen)] == ["sample", "iso", "marching_cubes", "clean", "decimate", "unwrap",
                                               "bake", "write"]

    class Stop(Exception):
        pass

    def cancel(stage, step, total):
        if stage == "unwrap":
            raise Stop

    with pytest.raises(Stop):
        export_field(SphereField(0.08), ExportConfig(resolution=48, faces=1000, texture=256), progress=cancel)


@pytest.mark.parametrize("key,value", [("faces", 10), ("texture", 1000), ("resolution", 4096), ("iso", -1.0),
                                       ("format", "fbx"), ("keep_fraction", 2.0), ("uv_patches", 0)])
def test_bad_config_names_the_field(key, value):
    with pytest.raises(SpecError) as e:
        from_dict(ExportConfig, {key: value})
    assert e.value.field == key and e.value.hint


def test_config_defaults_match_the_issue():
    cfg = ExportConfig()
    assert (cfg.faces, cfg.texture, cfg.resolution, cfg.iso, cfg.format) == (50_000, 1024, 256, None, "glb")


def test_split_pinches_separates_two_tetrahedra_sharing_an_edge():
    from backend.export.surface import open_edges, split_pinches

    v = np.array([[0, 0, 0], [1, 0, 0], [0.5, 1, 0.2], [0.5, 0.3, 1], [0.5, -1, 0.2], [0.5, -0.3, -1]], float)
    tet = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    f = np.concatenate([tet, np.where(tet == 2, 4, np.where(tet == 3, 5, tet))[:, ::-1]])
    v2, f2 = split_pinches(v, f)
    assert open_edges(f2) == 0 and len(v2) == len(v) + 2  # both edge ends duplicated
    np.testing.assert_allclose(v2[f2], v[f])  # geometry untouched


def test_iso_level_search_survives_sides_that_see_no_surface_head_on():
    from backend.export.iso import choose_iso_level

    sigma = np.zeros((32, 32, 32), np.float32)
    sigma[14:18, 14:18, :] = 5000.0  # a thin rod along z: the x and y sides see it only edge-on at its rim
    choice = choose_iso_level(sigma, spacing=0.01)
    assert np.isfinite(choice.level) and choice.level > 0


def test_close_holes_closes_a_small_hole_wound_like_its_neighbours():
    import trimesh

    from backend.export.surface import close_holes, open_edges, signed_volume

    box = trimesh.creation.box((1.0, 1.0, 1.0))
    v, f = np.asarray(box.vertices), np.asarray(box.faces)
    top = np.flatnonzero(box.face_normals[:, 2] > 0.5)
    assert len(top) == 2
    f = np.delete(f, top, axis=0)
    assert open_edges(f) == 4
    v2, f2 = close_holes(v, f)
    assert open_edges(f2) == 0 and len(v2) == len(v) + 1 and len(f2) == len(f) + 4
    assert signed_volume(v2, f2) == pytest.approx(1.0)  # outward, like the rest: the volume is the cube's
    v3, f3 = close_holes(v, f, max_edges=3)  # too large a hole: left open
    assert open_edges(f3) == 4


def test_linear_interpolation_is_finite_with_a_repeated_sample():
    """The blend lattice once ended in a repeated sample (a float32 axis against a float64 bound): 0/0 put NaN on the
    grid's far faces. Rows are finite, sum to 1 and reproduce a linear function."""
    from backend.export.grid import linear_interpolation

    src = np.array([-1.0, 0.0, 1.0, 1.0], np.float32)
    dst = np.linspace(-1.0, 1.0, 9, dtype=np.float32)
    m = linear_interpolation(src, dst)
    assert np.isfinite(m).all()
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(m @ (2.0 * src + 1.0), 2.0 * dst + 1.0, rtol=1e-5, atol=1e-6)

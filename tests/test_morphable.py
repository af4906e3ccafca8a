"""The rig format and its evaluation: ICT reconstruction against the original OBJs, pose, gaze, region, frame."""

from __future__ import annotations

import numpy as np
import pytest

from shared import conventions as C
from shared import ict
from shared.morphable import MorphableModel, RigNotFound, find_default_rig, load_default_rig, vertex_normals
from shared.spec import SpecError
from tests.support import ICT_SUBSET, uv_sphere

MAX_ERR_M = 0.002 * 0.01  # 0.002 cm


@pytest.fixture(scope="module")
def rig(ict_npz) -> MorphableModel:
    return MorphableModel.load(ict_npz)


def obj_vertices_m(name: str, rig: MorphableModel) -> np.ndarray:
    from backend.rigs.ict import read_obj_vertices

    return read_obj_vertices(ICT_SUBSET / f"{name}.obj") * 0.01 - rig.arrays["origin_in_source_units"] * 0.01


def test_ict_counts_and_layout(rig):
    assert rig.n_vertices == 26719 and rig.n_identity == 100 and len(rig.expression_names) == 53
    assert rig.faces.shape == (26384 + (26384 - 548), 3) and rig.faces.dtype == np.int32
    assert rig.normal_region_faces.dtype == np.int32 and rig.normal_region_faces.max() < rig.n_vertices
    assert "jawOpen" in rig.expression_names and "tongueOut" not in rig.expression_names
    assert "MIT License" in rig.license and "USC Institute for Creative Technologies" in rig.license


@pytest.mark.parametrize("name,kwargs", [
    ("generic_neutral_mesh", {}),
    ("identity000", {"identity": [1.0]}),
    ("jawOpen", {"expressions": {"jawOpen": 1.0}}),
    ("mouthSmile_L", {"expressions": {"mouthSmile_L": 1.0}}),
])
def test_reconstruction_matches_original_objs(rig, name, kwargs):
    err = np.abs(rig.evaluate(**kwargs) - obj_vertices_m(name, rig)).max()
    assert err <= MAX_ERR_M, f"{name}: max error {err * 100:.5f} cm"


def test_origin_is_centroid_of_normal_region(rig):
    used = np.unique(rig.normal_region_faces)
    assert np.abs(rig.neutral[used].mean(axis=0)).max() < 1e-6


def test_head_fits_the_nerf_bound(rig):
    assert np.abs(rig.neutral).max() < C.NERF_BOUND_RADIUS_M  # the whole ICT head, neck included
    face = rig.neutral[np.unique(rig.normal_region_faces)]
    assert np.linalg.norm(face, axis=1).max() < 0.15


def test_normal_region_is_hole_free_over_the_mouth(rig):
    lo, hi = ict.EYEBALL_POLYGONS
    skin = rig.normal_region_faces[~np.isin(rig.normal_region_faces, np.arange(21451, 24591)).any(axis=1)]
    loops = ict.boundary_loops(skin)
    assert len(loops) == 3  # the outer rim and the two eye openings (filled by the eyeballs); no mouth hole
    assert not np.isin(rig.normal_region_faces, np.arange(14062, 21451)).any()  # no gums, tongue, teeth
    n = rig.vertex_normals(rig.neutral, rig.normal_region_faces)
    lips = rig.arrays["landmarks68"][60:68]
    assert (n[lips, 2] > 0.1).all() and n[lips, 2].mean() > 0.3  # the membrane faces out of the mouth


def test_pose_rotates_about_the_origin(rig):
    pose = (0.2, -0.4, 0.1)
    expected = rig.evaluate(expressions={"jawOpen": 0.3}) @ C.euler_to_matrix(*pose).T
    assert np.allclose(rig.evaluate(expressions={"jawOpen": 0.3}, pose=pose), expected, atol=1e-6)


def test_gaze_turns_only_the_eyeballs(rig):
    base, looked = rig.evaluate(), rig.evaluate(gaze=(0.3, 0.0))
    moved = np.abs(looked - base).max(axis=1) > 1e-7
    eyes = rig.region_mask("eyeball_L", "eyeball_R")
    assert moved[eyes].mean() > 0.5 and not moved[~eyes].any()
    pupil = 22221 + np.argmax(base[22221:23021, 2])  # README: iris left; its frontmost vertex
    assert looked[pupil, 0] > base[pupil, 0] + 0.003  # positive yaw looks to +x (the subject's left)
    pivot = rig.arrays["eye_pivot_L"]
    r0 = np.linalg.norm(base[pivot] - base[pivot].mean(0), axis=1)
    r1 = np.linalg.norm(looked[pivot] - looked[pivot].mean(0), axis=1)
    assert np.allclose(np.sort(r0), np.sort(r1), atol=2e-5)  # rigid


def test_bad_inputs_name_the_field(rig):
    with pytest.raises(SpecError, match="mouthSmile_L"):
        rig.evaluate(expressions={"mouthSmileL": 1.0})
    with pytest.raises(SpecError, match="identity"):
        rig.evaluate(identity=np.zeros(101))


def test_save_load_round_trip(rig, tmp_path):
    path = rig.save(tmp_path / "ict.npz")
    again = MorphableModel.load(path)
    kw = dict(identity=[0.5, -1.0], expressions={"jawOpen": 0.4, "eyeBlink_L": 1.0}, pose=(0.1, 0.2, 0.0),
              gaze=(0.1, 0.1))
    assert np.array_equal(again.evaluate(**kw), rig.evaluate(**kw))
    assert np.array_equal(again.normal_region_faces, rig.normal_region_faces) and again.license == rig.license
    with np.load(path, allow_pickle=False) as z:  # readable without pickles
        assert str(z["kind"]) == "joker-head-morphable"


def test_vertex_normals_of_a_sphere_are_radial():

    v, f = uv_sphere(0.1, 48, 96)
    n = vertex_normals(v, f)
    assert np.abs(n - v / np.linalg.norm(v, axis=1, keepdims=True)).max() < 0.02


def test_default_rig_search(monkeypatch, tmp_path, ict_npz):
    monkeypatch.setenv("JOKER_HEAD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("JOKER_SHARED_DATA", str(tmp_path / "no-team"))
    monkeypatch.delenv("JOKER_HEAD_RIG", raising=False)
    with pytest.raises(RigNotFound, match="joker-head fetch-rig ict"):
        find_default_rig()
    monkeypatch.setenv("JOKER_SHARED_DATA", str(ict_npz.parents[2]))
    assert find_default_rig() == ict_npz
    monkeypatch.setenv("JOKER_HEAD_RIG", str(ict_npz))
    assert find_default_rig() == ict_npz


def test_the_default_rig_is_loaded_once_per_file_version(monkeypatch, tmp_path, ict_npz):
    """A job asks for its rig several times (views, oracle, completion): one load, until the file changes."""
    import os
    import shutil

    path = tmp_path / "rig.npz"
    shutil.copyfile(ict_npz, path)
    monkeypatch.setenv("JOKER_HEAD_RIG", str(path))
    first = load_default_rig()
    assert load_default_rig() is first
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new version of the file (e.g. re-imported)
    again = load_default_rig()
    assert again is not first and np.array_equal(again.neutral, first.neutral)


def test_presets_use_rig_names(rig):
    from shared.presets import EXPRESSION_PRESETS, get_preset, preset_weights

    for name in EXPRESSION_PRESETS:
        weights = preset_weights(name, rig.expression_names)
        assert all(0.0 <= w <= 1.0 for w in weights.values())
        rig.evaluate(expressions=weights, gaze=EXPRESSION_PRESETS[name].gaze)
    assert "tongue" in get_preset("tongue_out").prompt_hint
    with pytest.raises(SpecError, match="preset"):
        get_preset("grin!")
    with pytest.raises(SpecError, match="ARKit"):
        preset_weights("smile", [f"exp{i:02d}" for i in range(64)])

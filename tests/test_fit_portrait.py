"""fit_portrait end to end: real photos and rendered heads through detector, crop, mesh and fit; clean failures."""

from __future__ import annotations

import numpy as np
import pytest

from backend.fit import FitError, PortraitFit, fit_portrait, load_photo
from backend.fit.headshot import render_headshot

pytestmark = pytest.mark.slow


def _check(pf: PortraitFit, centre_px: float = 12.0) -> None:
    assert pf.crop.image.shape == (512, 512, 3) and pf.crop.image.dtype == np.uint8
    assert pf.landmarks.shape == (68, 2) and pf.mesh.shape == (468, 2) and pf.dense
    eyes = pf.landmarks[36:48].reshape(2, 6, 2).mean(1)
    # framed like the reference: eyes about the centre line (a turned head's eyes less so), ~136 px apart
    assert abs(eyes.mean(0)[0] - 256) < centre_px and 100 < eyes[1, 0] - eyes[0, 0] < 165


def test_astronaut(ict_rig, astronaut_path):
    pf = fit_portrait(load_photo(astronaut_path), ict_rig, name="astronaut.png")
    _check(pf)
    assert pf.fit.verdict == "good" and pf.fit.residual_px.mean() < 3.0
    assert np.degrees(np.abs(pf.fit.state.pose)).max() < 15  # a frontal portrait
    e = pf.fit.state.expressions
    assert (e.get("mouthSmile_L", 0) + e.get("mouthSmile_R", 0)) / 2 > 0.3  # she smiles
    assert pf.warnings == []


def test_hopper(ict_rig, hopper_path):
    pf = fit_portrait(load_photo(hopper_path), ict_rig)
    _check(pf)
    assert pf.fit.verdict == "good" and pf.fit.residual_px.mean() < 3.0


def test_rendered_head_pose_is_recovered(ict_rig):
    rng = np.random.default_rng(2)
    pose = (0.1, -0.3, 0.05)
    shot = render_headshot(ict_rig, rng.normal(size=ict_rig.n_identity), {"jawOpen": 0.25}, pose)
    pf = fit_portrait(shot.image / 255.0, ict_rig)
    _check(pf, centre_px=30.0)
    assert np.degrees(np.abs(np.array(pf.fit.state.pose) - pose)).max() < 5.0


def test_no_face_fails_cleanly(ict_rig, faceless_paths):
    with pytest.raises(FitError) as e:
        fit_portrait(load_photo(faceless_paths[0]), ict_rig, name="inputs.reference")
    assert e.value.code == "no_face" and str(e.value).startswith("inputs.reference:") and e.value.hint


def test_several_faces_use_the_largest_and_name_the_others(ict_rig, astronaut_path, hopper_path):
    astronaut, hopper = load_photo(astronaut_path), load_photo(hopper_path)[::2, ::2]
    canvas = np.zeros((600, 900, 3), np.float32)
    canvas[40:552, :512] = astronaut
    canvas[100:100 + hopper.shape[0], 560:560 + hopper.shape[1]] = hopper
    pf = fit_portrait(canvas, ict_rig)
    assert pf.face.box[2] < 512  # the astronaut's face is the larger one
    assert len(pf.warnings) == 1 and "1 other face" in pf.warnings[0]


def test_face_too_small(ict_rig, astronaut_path):
    from PIL import Image

    small = np.asarray(Image.open(astronaut_path).convert("RGB").resize((72, 72), Image.LANCZOS)) / 255.0
    canvas = np.full((400, 400, 3), 0.5)
    canvas[100:172, 150:222] = small
    with pytest.raises(FitError) as e:
        fit_portrait(canvas, ict_rig, name="tiny.png")
    assert e.value.code in ("face_too_small", "no_face") and "tiny.png" in str(e.value)


def test_match_expression_keeps_the_artists_identity(ict_rig, astronaut_path):
    """Cross-reenactment: a driving photo sets expression and pose only; identity stays as the artist set it."""
    from shared.jobs import RigState

    identity = tuple(float(v) for v in np.random.default_rng(4).normal(size=ict_rig.n_identity))
    pf = fit_portrait(load_photo(astronaut_path), ict_rig, fit_identity=False, init=RigState(identity=identity))
    assert pf.fit.state.identity == pytest.approx(identity)
    e = pf.fit.state.expressions
    assert (e.get("mouthSmile_L", 0) + e.get("mouthSmile_R", 0)) / 2 > 0.3 and pf.fit.verdict in ("good", "rough")


def test_a_turned_head_is_fitted_with_a_profile_warning(ict_rig):
    shot = render_headshot(ict_rig, None, None, (0.0, np.radians(58.0), 0.0))
    pf = fit_portrait(shot.image / 255.0, ict_rig)
    assert pf.fit.state.pose[1] > np.radians(35.0)  # turned toward image right, as rendered
    assert any("profile" in w for w in pf.warnings)



def test_the_calibrated_detector_path_recovers_identity_better_than_the_mean_face(ict_rig):
    """Rendered heads of known N(0, 1) identity through detector, crop, mesh and fit. With the response model
    (opt-in, backend.fit.response) the recovered neutral face beats the mean face by a margin that matters (100
    held-out heads: 0.54 ± 0.10 mm; > 0.25 mm asserted on 12) and beats the default fit, whose gain on such renders
    is small (~0.3 mm on 100 heads, docs/FIT.md). Seeds disjoint from the benchmark's (0) and the calibration's."""
    from backend.fit import aligned_crop, detect_faces
    from backend.fit.metrics import shape_error_mm
    from backend.fit.portrait import fit_landmarks

    rng = np.random.default_rng(21)
    calibrated, default = [], []
    for _ in range(12):
        identity = rng.normal(size=ict_rig.n_identity)
        pose = (rng.uniform(-0.15, 0.15), rng.uniform(-0.35, 0.35), rng.uniform(-0.08, 0.08))
        shot = render_headshot(ict_rig, identity, None, pose)
        _, mesh = aligned_crop(shot.image, detect_faces(shot.image)[0])
        mean_face = shape_error_mm(ict_rig, None, identity)
        for out, flag in ((calibrated, True), (default, False)):
            fit = fit_landmarks(ict_rig, mesh, calibrated=flag)
            out.append(mean_face - shape_error_mm(ict_rig, fit.state.identity, identity))
    assert np.mean(calibrated) > 0.25 and np.mean(calibrated) > np.mean(default) + 0.1, (calibrated, default)

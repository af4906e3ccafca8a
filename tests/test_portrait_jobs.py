"""The portrait path through the job service: the ``fit`` job on a real server, the aligned reference of
``preview`` / ``generate``, bad photos failing cleanly while the server lives on, and the portrait CLI.

Real photos: scikit-image's astronaut (a real portrait), its coffee cup (no face), and a two-face composite.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from backend.jobs.fit import FitRunner
from backend.jobs.photos import read_reference
from backend.runner import JobContext, JobFailed
from shared import protocol as P
from shared.client import ClientError
from shared.jobs import FitParams, RigState
from shared.spec import from_dict
from tests.support import assert_close


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # uint8 [512, 512, 3]


@pytest.fixture(scope="module")
def astronaut_png(astronaut) -> bytes:
    return _png(astronaut)


@pytest.fixture(scope="module")
def coffee_png() -> bytes:
    from skimage import data

    return _png(data.coffee())  # a cup of coffee: no face


@pytest.fixture(scope="module")
def tiny_face_png(astronaut) -> bytes:
    """The astronaut at 128 px in a 400 px frame: a face is found, its eyes ~11 px apart, too small to fit."""
    canvas = np.zeros((400, 400, 3), np.uint8)
    canvas[:128, :128] = np.asarray(Image.fromarray(astronaut).resize((128, 128), Image.LANCZOS))
    return _png(canvas)


@pytest.fixture(scope="module")
def two_faces_png(astronaut) -> bytes:
    """The astronaut beside a half-size copy of herself: two faces, the left one the larger."""
    canvas = np.full((512, 800, 3), 200, np.uint8)
    canvas[:, :512] = astronaut
    small = np.asarray(Image.fromarray(astronaut).resize((256, 256), Image.LANCZOS))
    canvas[128:384, 530:786] = small
    return _png(canvas)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from testkit.tiny_prior import ensure_tiny_models

    return ensure_tiny_models(tmp_path_factory.getbasetemp() / "prior-models")


def _ctx(tmp_path, events):
    return JobContext("job", tmp_path, "cpu", emit=events.append)


# --- the reference framing of preview / generate ----------------------------------------------------------------
def test_aligned_reference_is_the_reference_crop_and_centre_is_the_centre(astronaut, astronaut_png, tmp_path):
    from backend.fit import aligned_crop, detect_faces, load_photo, reference_crop

    image = load_photo(astronaut_png)
    crop = aligned_crop(image, detect_faces(image)[0])[0]  # the fit job's crop: the reference's, on steady points
    want = crop.image  # uint8 [512, 512, 3]
    # the crop says which 5 points it was aligned on: the reference crop on exactly those points is this crop
    assert crop.aligned_on == "mtcnn, steadied" and crop.landmarks5.shape == (5, 2)
    np.testing.assert_array_equal(reference_crop(image, crop.landmarks5).image, want)
    got = read_reference(P.Png(astronaut_png), 512, "aligned", _ctx(tmp_path, []))
    assert got.shape == (3, 512, 512) and got.dtype == np.float32
    np.testing.assert_array_equal((got.transpose(1, 2, 0) * 255).round().astype(np.uint8), want)
    small = read_reference(P.Png(astronaut_png), 64, "aligned", _ctx(tmp_path, []))  # the tiny prior's size
    lanczos = np.asarray(Image.fromarray(want).resize((64, 64), Image.LANCZOS))
    np.testing.assert_array_equal((small.transpose(1, 2, 0) * 255).round().astype(np.uint8), lanczos)
    centre = read_reference(P.Png(astronaut_png), 512, "centre", _ctx(tmp_path, []))
    np.testing.assert_array_equal((centre.transpose(1, 2, 0) * 255).round().astype(np.uint8), astronaut)
    assert not np.array_equal(want, astronaut)  # the aligned crop is not the photo: the test can tell them apart


def test_aligned_crop_errors_name_the_callers_image(astronaut):
    from backend.fit import Face, FitError, aligned_crop
    from backend.jobs.photos import as_job_failed

    eyes_nose_mouth = np.array([[100.0, 100.0], [160.0, 100.0], [130.0, 135.0], [105.0, 165.0], [155.0, 165.0]])
    face = Face(np.array([70.0, 60.0, 190.0, 200.0]), 0.99, eyes_nose_mouth)
    with pytest.raises(FitError) as e:  # a "face" in a black image: the landmark model finds none
        aligned_crop(np.zeros((256, 256, 3), np.float32), face, name="inputs.reference")
    assert str(e.value).startswith("inputs.reference: expected a face the landmark model can read"), str(e.value)
    assert e.value.field == "inputs.reference" and e.value.code == "no_landmarks" and e.value.hint
    failed = as_job_failed(e.value, "reference")  # the job's failure names the input once
    assert str(failed).startswith("inputs.reference: expected") and failed.code == "no_landmarks"
    coincident = Face(face.box, 0.99, np.full((5, 2), 120.0))
    with pytest.raises(FitError) as e:  # on the face's own points (the shipped crop re-runs the O-Net on the box)
        aligned_crop(astronaut, coincident, points="mtcnn raw", name="inputs.photo")
    assert str(e.value).startswith("inputs.photo: expected 5 landmarks spread over a face"), str(e.value)


def test_aligned_reference_failures_name_the_image_and_the_fix(coffee_png, tiny_face_png, two_faces_png, tmp_path):
    with pytest.raises(JobFailed) as e:
        read_reference(P.Png(coffee_png), 64, "aligned", _ctx(tmp_path, []))
    assert e.value.code == "no_face" and "inputs.reference" in str(e.value) and "centre" in e.value.hint
    assert read_reference(P.Png(coffee_png), 64, "centre", _ctx(tmp_path, [])).shape == (3, 64, 64)
    with pytest.raises(JobFailed) as e:
        read_reference(P.Png(tiny_face_png), 64, "aligned", _ctx(tmp_path, []))
    assert e.value.code == "face_too_small" and "inputs.reference" in str(e.value) and e.value.hint
    with pytest.raises(JobFailed) as e:
        read_reference(P.Png(b"\x89PNG\r\n\x1a\n broken"), 64, "aligned", _ctx(tmp_path, []))
    assert e.value.code == "invalid_image" and "inputs.reference" in str(e.value) and e.value.hint
    huge = _png(np.zeros((8, P.MAX_IMAGE_SIDE + 4, 3), np.uint8))
    with pytest.raises(JobFailed) as e:
        read_reference(huge, 64, "centre", _ctx(tmp_path, []))
    assert e.value.code == "image_too_large" and str(P.MAX_IMAGE_SIDE) in str(e.value)
    events = []
    read_reference(P.Png(two_faces_png), 64, "aligned", _ctx(tmp_path, events))
    warnings = [e.message for e in events if e.stage == "warning"]
    assert len(warnings) == 1 and "2 faces" in warnings[0] and "inputs.reference" in warnings[0]
    assert "face 2 at x 6" in warnings[0]  # the other face (pasted at x 530..786) is named by where it is


@pytest.mark.slow
def test_preview_frames_the_reference_on_the_face_unless_asked_for_the_centre(coffee_png, tiny_models, tmp_path):
    from backend.jobs.preview import PreviewRunner
    from shared.jobs import PreviewParams

    runner = PreviewRunner(models_dir=tiny_models)
    inputs = {"vertices": np.array([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]], np.float32),
              "faces": np.array([[0, 1, 2]], np.int32), "reference": P.Png(coffee_png)}
    with pytest.raises(JobFailed) as e:  # aligned by default: a reference without a face says so
        runner.run(PreviewParams(steps=1, sampler="ddim"), inputs, _ctx(tmp_path, []))
    assert e.value.code == "no_face" and "inputs.reference" in str(e.value)
    result = runner.run(PreviewParams(steps=1, sampler="ddim", reference_framing="centre"), inputs,
                        _ctx(tmp_path, []))
    assert result.meta["reference"] is True and result.meta["reference_framing"] == "centre"


# --- the fit job through a real server ----------------------------------------------------------------------------
@pytest.mark.slow
def test_fit_job_on_a_real_server_and_bad_photos_fail_cleanly(make_server, make_client, astronaut_png, coffee_png,
                                                             tiny_face_png, two_faces_png):
    server = make_server(runners={"fit": FitRunner()})
    client = make_client(server.endpoint, timeout_s=5.0)
    bad = ((b"GIF89a this is not an image", "invalid_image"), (coffee_png, "no_face"),
           (tiny_face_png, "face_too_small"), (_png(np.zeros((8, P.MAX_IMAGE_SIDE + 1, 3), np.uint8)),
                                               "image_too_large"))
    for photo, code in bad:
        job = client.submit("fit", FitParams(), {"photo": P.Blob(photo)})
        with pytest.raises(ClientError) as e:
            client.wait(job, timeout_s=120)
        err = e.value.error
        assert err.code == code and "inputs.photo" in err.message and "expected" in err.message and err.hint, err
    assert client.ping()[0].kinds == ("fit",)  # the server lives on

    events = []
    job = client.submit("fit", FitParams(), {"photo": P.Blob(two_faces_png)})
    meta = client.wait(job, timeout_s=300, on_event=events.append).body.meta
    warnings = [m.body.message for m in events if isinstance(m.body, P.Progress) and m.body.stage == "warning"]
    assert any("other face" in w and "inputs.photo" in w for w in warnings), warnings
    assert meta["warnings"] == warnings and meta["face"]["box"][2] < 512  # the larger, left face was fitted

    result = client.wait(client.submit("fit", FitParams(), {"photo": P.Blob(astronaut_png)}), timeout_s=300)
    meta, files = result.body.meta, result.payloads
    assert meta["verdict"] in ("good", "rough") and meta["residual_mean_px"] < 4.0
    assert meta["identity_from"] == "landmarks and shading" and 0 < meta["shading_error"] < 0.12
    state = from_dict(RigState, meta["rig"])  # the fitted state is a valid request state
    assert state.model == "ict" and np.abs(state.identity).max() > 0.1 and len(state.expressions) > 0
    # the aligned crop frames the face as a head near the origin seen by the crop camera at z = 1 m
    assert np.abs(meta["translation_m"]).max() < 0.3
    lm = np.asarray(meta["landmarks"])
    assert lm.shape == (68, 2) and (lm > 0).all() and (lm < 512).all() and len(meta["residual_px"]) == 68
    # the 5 points the crop was aligned on, in crop px: where the reference crop puts every face's eyes
    assert meta["aligned_on"] == "mtcnn, steadied"
    lm5 = np.asarray(meta["landmarks5"])
    assert lm5.shape == (5, 2) and abs(lm5[:2, 1].mean() - lm5[3:, 1].mean()) > 50  # eyes well above the mouth
    A = np.asarray(meta["crop"]["to_crop"])
    from backend.fit import aligned_crop, detect_faces, load_photo

    image = load_photo(astronaut_png)
    direct = aligned_crop(image, detect_faces(image)[0])[0]
    assert_close(lm5, direct.points_to_crop(direct.landmarks5), rel=1e-5, name="landmarks5")  # meta rounds 1e-4 px
    assert_close(A, direct.to_crop, rel=1e-4, name="to_crop")
    crop, marked, overlay = (_decode(files[n].data) for n in ("crop.png", "landmarks.png", "overlay.png"))
    assert crop.shape == marked.shape == overlay.shape == (512, 512, 3)
    x, y = np.round(lm[8]).astype(int)  # the chin: a green landmark dot on the marked crop
    assert marked[y, x].tolist() == [64, 255, 64] and crop[y, x].tolist() != [64, 255, 64]
    cx, cy = np.round(lm[27:31].mean(axis=0)).astype(int)  # the nose bridge: the fitted rig's normals cover it
    assert np.abs(overlay[cy, cx - 10].astype(int) - crop[cy, cx - 10].astype(int)).max() > 20
    assert overlay[2, 2].tolist() == crop[2, 2].tolist()  # the corner is outside the head: the crop unchanged

    # Match Expression's fit: the identity is not fitted but kept from init (the artist's), expression and pose are
    artist = RigState(identity=(1.5, -1.0, 0.5), expressions={"jawOpen": 0.9}, pose=(0.0, 0.0, 0.0))
    params = FitParams(fit_identity=False, init=artist)
    kept = client.wait(client.submit("fit", params, {"photo": P.Blob(astronaut_png)}), timeout_s=300).body.meta
    assert_close(np.asarray(kept["rig"]["identity"])[:3], np.asarray(artist.identity), name="kept identity")
    assert not np.any(np.asarray(kept["rig"]["identity"])[3:])
    assert kept["identity_from"] == "landmarks" and kept["shading_error"] is None
    assert kept["rig"]["expressions"] != artist.expressions  # fitted to the photo, not kept


# --- the CLI ----------------------------------------------------------------------------------------------------
def test_compose_state_takes_identity_from_the_reference_and_expression_by_precedence():
    from backend.commands.portrait_cmds import compose_state

    ref = {"rig": {"model": "ict", "identity": [0.5, -1.0], "expressions": {"jawOpen": 0.3},
                   "pose": [0.1, 0.2, 0.0]}}
    drive = {"rig": {"model": "ict", "identity": [2.0], "expressions": {"mouthSmile_L": 0.8},
                     "pose": [0.0, -0.3, 0.05]}}
    names = ["jawOpen", "mouthSmile_L", "mouthSmile_R", "eyeBlink_L", "eyeBlink_R"]
    alone = compose_state(ref, None, None, names)
    assert alone.identity == (0.5, -1.0) and alone.expressions == {"jawOpen": 0.3} and alone.pose == (0, 0, 0)
    driven = compose_state(ref, drive, None, names)
    assert driven.identity == (0.5, -1.0) and driven.expressions == {"mouthSmile_L": 0.8}
    assert driven.pose == (0.0, -0.3, 0.05)
    preset = compose_state(ref, drive, "eyes_closed", names)
    assert preset.expressions == {"eyeBlink_L": 1.0, "eyeBlink_R": 1.0} and preset.pose == (0.0, -0.3, 0.05)


@pytest.mark.slow
def test_cli_preview_from_a_portrait_end_to_end(make_server, astronaut_png, coffee_png, tiny_models, tmp_path,
                                                capsys):
    from backend.cli import main
    from backend.jobs.preview import PreviewRunner
    from testkit.tiny_prior import TINY_RESOLUTION

    server = make_server(runners={"fit": FitRunner(), "preview": PreviewRunner(models_dir=tiny_models)})
    photo = tmp_path / "astronaut.jpg"  # a JPEG, as a user has them: the CLI sends the reference as PNG
    Image.open(io.BytesIO(astronaut_png)).save(photo, quality=95)
    out = tmp_path / "out"
    rc = main(["preview", "--server", server.endpoint, "--reference", str(photo), "--expression", "smile",
               "--prompt", "a woman laughing", "--steps", "2", "--out", str(out), "--wait-s", "300"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert f"image: {out / 'preview'}" in printed.out and "fit reference: " in printed.out
    assert "  [denoise] 1/" in printed.out  # progress reached the terminal
    image = _decode((out / "preview" / "image.png").read_bytes())
    assert image.shape == (TINY_RESOLUTION, TINY_RESOLUTION, 3)
    meta = json.loads((out / "preview" / "meta.json").read_text())["meta"]
    assert meta["reference"] is True and meta["reference_framing"] == "aligned"
    assert (out / "fit-reference" / "overlay.png").is_file() and (out / "fit-reference" / "crop.png").is_file()
    normals = _decode((out / "preview" / "normals.png").read_bytes())
    assert normals[TINY_RESOLUTION // 2, TINY_RESOLUTION // 2].any()  # the fitted, posed rig was rendered

    rc = main(["preview", "--server", server.endpoint, "--reference", str(tmp_path / "missing.jpg"),
               "--prompt", "x", "--out", str(out)])
    assert rc == 2 and "--reference" in capsys.readouterr().err
    cup = tmp_path / "coffee.png"
    cup.write_bytes(coffee_png)
    rc = main(["preview", "--server", server.endpoint, "--reference", str(cup), "--prompt", "x", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "error [no_face]: inputs.photo: expected" in err and " — " in err  # with its fix


def test_cli_generate_request_poses_the_default_rig_and_sends_the_reference_as_png(astronaut, tmp_path):
    import argparse

    from backend.commands.portrait_cmds import as_png, build_job
    from shared.jobs import GenerateParams
    from shared.morphable import load_default_rig

    model = load_default_rig("ict")
    state = RigState(model="ict", identity=(1.0, -0.5), expressions={"jawOpen": 0.4}, pose=(0.0, 0.2, 0.0))
    args = argparse.Namespace(kind="generate", prompt="laughing", negative="", seed=3, reference_framing="aligned",
                              prior="oracle", preset="draft", max_steps=40, mesh_resolution=64, faces=2000,
                              texture=256)
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, format="JPEG", quality=95)
    params, inputs = build_job(args, model, state, buf.getvalue())
    assert isinstance(params, GenerateParams) and params.rig == state and params.distill.resolved().steps == 40
    assert (params.export.resolution, params.export.faces, params.export.texture) == (64, 2000, 256)
    want = model.evaluate((1.0, -0.5), {"jawOpen": 0.4}, (0.0, 0.2, 0.0), (0.0, 0.0))
    assert_close(inputs["vertices"], want.astype(np.float32), name="posed vertices")
    assert inputs["faces"].dtype == np.int32 and inputs["faces"].shape == model.normal_region_faces.shape
    png = inputs["reference"].data
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and _decode(png).shape == astronaut.shape
    assert as_png(png) == png  # a PNG goes as it is
    with pytest.raises(ValueError, match="--reference"):
        as_png(b"not an image")


@pytest.mark.slow
def test_cli_generate_from_a_portrait_prints_where_the_glb_landed(make_server, astronaut_png, tmp_path, capsys):
    from backend.cli import main
    from backend.jobs.generate import GenerateRunner

    server = make_server(runners={"fit": FitRunner(), "generate": GenerateRunner()})
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(astronaut_png)
    out = tmp_path / "out"
    # The oracle prior (no weights) and a test-sized job: the draft schedule capped at 40 steps, a coarse mesh.
    rc = main(["generate", "--server", server.endpoint, "--reference", str(photo), "--driving", str(photo),
               "--prompt", "laughing", "--prior", "oracle", "--preset", "draft", "--max-steps", "40",
               "--mesh-resolution", "64", "--faces", "2000", "--texture", "256", "--out", str(out),
               "--wait-s", "600"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    glb = out / "generate" / "head.glb"
    assert f"GLB: {glb}" in printed.out and glb.read_bytes()[:4] == b"glTF"
    assert "fit driving: " in printed.out and "[distill]" in printed.out
    meta = json.loads((out / "generate" / "meta.json").read_text())["meta"]
    assert meta["mode"] == "oracle" and meta["steps"] == 40
    assert meta["view_framing"] == "reference"  # the fitted ICT rig: every view framed on its landmarks
    assert (out / "fit-driving" / "overlay.png").is_file() and (out / "fit-reference" / "overlay.png").is_file()


# --- the distillation views of generate ---------------------------------------------------------------------------
def test_generate_frames_its_views_on_the_posed_rigs_landmarks():
    from shared.framing import reference_view_cameras
    from backend.jobs.views import distill_views
    from shared.conventions import reference_grid
    from shared.morphable import load_default_rig

    model = load_default_rig("ict")
    state = RigState(model="ict", identity=(0.8,), expressions={"jawOpen": 0.5}, pose=(0.1, 0.3, 0.0))
    vertices = model.evaluate(state.identity, state.expressions, state.pose)
    cameras, framing = distill_views(state, vertices, 3, 2)
    grid = reference_grid(512, 3, 2)
    want = reference_view_cameras(grid, vertices[model.arrays["landmarks68"]])
    assert framing == "reference" and len(cameras) == 6
    for got, ref, plain in zip(cameras, want, grid):
        assert_close(got.K, ref.K, name="K")
        np.testing.assert_array_equal(got.c2w, plain.c2w)  # the pose is the grid's; only the intrinsics move
        assert (got.width, got.height) == (512, 512)
    frontal = distill_views(RigState(), model.evaluate(), 1, 1)[0][0]
    assert frontal.K[1, 2] < 256 - 10  # the reference frames the face higher than a camera on the origin does
    other = np.zeros((100, 3))  # not the named rig's mesh: the centred grid, said so
    cameras, framing = distill_views(state, other, 3, 2)
    assert framing == "centred" and all(np.array_equal(c.K, g.K) for c, g in zip(cameras, grid))
    assert distill_views(RigState(model="nosuchrig"), vertices, 1, 1)[1] == "centred"


def test_a_single_preview_view_is_framed_at_its_own_resolution():
    from backend.jobs.views import framed
    from shared.conventions import orbit_camera
    from shared.morphable import load_default_rig

    model = load_default_rig("ict")
    vertices = model.evaluate()
    (at_64,), framing = framed([orbit_camera(20.0, 5.0, res=64)], RigState(), vertices)
    (at_512,), _ = framed([orbit_camera(20.0, 5.0, res=512)], RigState(), vertices)
    assert framing == "reference" and (at_64.width, at_64.height) == (64, 64)
    assert_close(at_64.K, at_512.scaled(64).K, name="K at 64")  # the same framing at the tiny prior's size

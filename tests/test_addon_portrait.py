"""Match Portrait / Match Expression under real bpy against a real `joker-head serve` (the fit job on a real photo).

The extension is built and installed once (fixtures in tests/conftest.py); each bpy script runs in a subprocess.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.addon_harness import RIG_SCRIPT, UI_SCRIPT, needs_bpy, run_bpy, start_backend
from tests.support import assert_close

MATCH_SCRIPT = """
    import json
    from pathlib import Path
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.backend_address, prefs.results_dir, prefs.timeout_s = {endpoint!r}, {results!r}, 20.0
    rig, props = mod("rig"), mod("props")
    bpy.ops.joker_head.add_rig()
    scene = bpy.context.scene
    state = scene.joker_head
    name = state.rig.name
    obj = lambda: bpy.data.objects[name]
    photo = bpy.data.images.load({photo!r})
    state.reference = photo
    state.match_pose = True  # identity and pose; the expression stays as the artist set it
    obj().data.shape_keys.key_blocks["jawOpen"].value = 0.6
    def snapshot():
        o = obj()
        return dict(identity=rig.identity_weights(o).tolist(), pose=list(rig.head_pose(o)),
                    expressions=rig.expression_weights(o))
    def fit(op):
        op()
        job_id = bpy.context.scene.joker_head.fit_job
        job = lambda: props.find_job(bpy.context.scene, job_id)
        pump_until(lambda: job().state == "failed" or (job().state == "done" and job().result_path), 400, "the fit")
        j = job()
        meta = json.loads(Path(j.result_path).read_text())["meta"] if j.state == "done" else None
        return dict(state=j.state, error=j.error, hint=j.hint, message=j.message, warnings=j.warnings,
                    purpose=j.purpose), meta
    before = snapshot()
    portrait_job, portrait = fit(bpy.ops.joker_head.match_portrait)
    matched = snapshot()
    portrait_summary = bpy.context.scene.joker_head.fit_summary
    crop = bpy.data.images.get("Joker Aligned Crop")
    crop_size = list(crop.size) if crop else None
    crop_px = mod("images").read_image(crop)[..., :3] if crop else None
    green = int(((crop_px == [64, 255, 64]).all(axis=-1)).sum()) if crop is not None else 0
    bpy.ops.ed.undo()  # ONE step back: identity and pose as before the fit
    undone = snapshot()
    bpy.ops.ed.redo()
    redone = snapshot()

    state = bpy.context.scene.joker_head
    state.driving = bpy.data.images[photo.name]
    obj().rotation_euler = (0.0, 0.0, 0.0)
    expression_job, driving = fit(bpy.ops.joker_head.match_expression)
    expressed = snapshot()
    report(before=before, matched=matched, undone=undone, redone=redone, expressed=expressed,
           portrait=portrait, driving=driving, portrait_job=portrait_job, expression_job=expression_job,
           crop_size=crop_size, green=green, summary=state.fit_summary, portrait_summary=portrait_summary)
"""


@needs_bpy
@pytest.mark.slow
def test_match_portrait_and_match_expression_set_the_rig(blender_user, ict_npz, tmp_path):
    from PIL import Image
    from skimage import data

    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    backend = start_backend(tmp_path)
    try:
        got = run_bpy(MATCH_SCRIPT.format(endpoint=backend.endpoint, results=str(tmp_path / "results"),
                                          photo=str(photo)), blender_user, timeout=900)
    finally:
        backend.stop()
    assert got["portrait_job"]["state"] == "done", got["portrait_job"]
    assert got["portrait_job"]["purpose"] == "portrait"
    fitted = got["portrait"]["rig"]
    n = len(fitted["identity"])
    ident = np.asarray(got["matched"]["identity"])
    assert_close(ident[:n], np.float32(fitted["identity"]), name="identity")  # float32 on the rig
    assert not ident[n:].any() and np.abs(ident).max() > 0.1
    # the rig reads back the fitted pose (through Blender's float32 rotation; float64 compare, float32 tolerance)
    assert_close(got["matched"]["pose"], np.float32(fitted["pose"]), name="pose")
    assert got["matched"]["expressions"] == got["before"]["expressions"] == {"jawOpen": pytest.approx(0.6)}
    assert got["crop_size"] == [512, 512] and got["green"] > 68  # the aligned crop with its landmarks
    assert got["summary"].startswith("fit good") or got["summary"].startswith("fit rough")
    # a colour portrait: Match Portrait's shape came from the shading too; Match Expression fits no shape
    assert got["portrait_summary"].endswith("face shape from the landmarks and shading"), got["portrait_summary"]
    assert got["summary"].endswith("face shape from the landmarks"), got["summary"]
    assert got["undone"] == got["before"]  # one undo step takes the whole match back
    assert got["redone"]["identity"] == got["matched"]["identity"]

    assert got["expression_job"]["state"] == "done", got["expression_job"]
    drive = got["driving"]["rig"]
    assert got["expressed"]["identity"] == got["redone"]["identity"]  # Match Expression keeps the identity
    # ... and fits the driving face's expression on it (the rig's identity went with the request as init)
    assert_close(np.float32(drive["identity"]), np.float32(fitted["identity"]), name="init identity")
    want = {k: v for k, v in drive["expressions"].items() if v != 0.0}
    assert got["expressed"]["expressions"].keys() == want.keys()
    assert_close(np.float32([got["expressed"]["expressions"][k] for k in want]), np.float32(list(want.values())),
                 name="expressions")
    assert_close(got["expressed"]["pose"], np.float32(drive["pose"]), name="driving pose")


@needs_bpy
def test_portrait_panel_draws_its_controls_and_the_aligned_crop(blender_user, ict_npz):
    setup = """
    job = scene.joker_head.jobs.add()
    job.job_id, job.kind, job.state, job.purpose = "ab" * 16, "fit", "done", "portrait"
    job.warnings = "inputs.photo: 1 other face(s) ignored (at (640, 186) px, 45 px)"
    scene.joker_head.fit_job, scene.joker_head.fit_summary = job.job_id, "fit good: landmark error 2.4 px at 512²"
    mod("images").write_image("Joker Aligned Crop", np.zeros((16, 16, 3), np.uint8))
"""
    got = run_bpy(RIG_SCRIPT + setup + UI_SCRIPT, blender_user)
    log = got["logs"]["JOKER_PT_portrait"]  # the fake layout checked every property and operator it names
    assert sum(e.startswith("template_ID") for e in log) == 2  # the reference and the driving photo
    assert "label:inputs.photo: 1 other face(s) ignored (at (640, 186) px, 45 px)" in log
    assert "label:fit good: landmark error 2.4 px at 512²" in log
    assert any(e.startswith("template_icon") for e in log)  # the aligned crop is shown
    assert "prop:reference_framing" in got["logs"]["JOKER_PT_generate"]


@needs_bpy
def test_a_phone_photo_reaches_the_backend_upright(blender_user, tmp_path):
    """Blender ignores EXIF orientation; the reference PNG the add-on sends is turned upright like the file the
    fit job decodes, so Preview/Generate and Match Portrait see the same face."""
    import io

    from PIL import Image, ImageOps

    pixels = np.zeros((40, 80, 3), np.uint8)
    pixels[:, :40] = 255  # white left half
    im = Image.fromarray(pixels)
    exif = im.getexif()
    exif[0x0112] = 6  # stored sideways: shown turned 90 degrees clockwise
    photo = tmp_path / "phone.jpg"
    im.save(photo, exif=exif.tobytes(), quality=100)
    out = tmp_path / "sent.png"
    got = run_bpy(f"""
    images = mod("images")
    image = bpy.data.images.load({str(photo)!r})
    open({str(out)!r}, "wb").write(images.image_to_png(image))
    report(size=list(image.size), same_file=images.photo_bytes(image) == open({str(photo)!r}, "rb").read())
    """, blender_user)
    assert got["size"] == [80, 40] and got["same_file"]  # Blender shows it as stored; the fit job gets the file
    sent = np.asarray(Image.open(out).convert("RGB")).astype(int)
    want = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(photo.read_bytes()))).convert("RGB")).astype(int)
    assert sent.shape == want.shape == (80, 40, 3)
    assert np.abs(sent - want).mean() < 2  # two JPEG decoders: equal up to rounding

"""The Blender extension, headless with bpy (4.5 LTS; `make test` also runs these on the newest bpy): build, install into an isolated user folder, rig, request, import,
render. Each bpy script runs in a subprocess (addon_harness.run_bpy); the zip is built and installed once."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.addon_harness import (REPO, RIG_SCRIPT, UI_SCRIPT, assert_turntable_clean, needs_bpy, run_bpy,
                                 start_backend)

sys.path.insert(0, str(REPO))
import build_addon  # noqa: E402


# --- the zip -------------------------------------------------------------------------------------------------------
def test_zip_layout_manifest_and_wheels(addon_zip):
    report = build_addon.validate(addon_zip)
    assert sorted(report.platforms) == ["linux-x64", "macos-arm64", "macos-x64", "windows-x64"]
    with zipfile.ZipFile(addon_zip) as zf:
        names = set(zf.namelist())
        manifest = zf.read("blender_manifest.toml").decode()
    assert {"__init__.py", "blender_manifest.toml", "shared/client.py", "shared/morphable.py", "net.py"} <= names
    assert not any(n.startswith(("backend/", "tests/")) or "__pycache__" in n for n in names)
    assert "demo_scene.py" not in names  # a repository tool, not part of the extension
    for platform in build_addon.PLATFORMS:
        assert any(build_addon.serves(Path(w).name, platform) for w in report.wheels), platform
    assert 'network = "' in manifest and 'files = "' in manifest
    if report.rig:
        assert "data/LICENSE-ICT-FaceKit.txt" in names


def test_validation_names_each_problem(addon_zip, tmp_path):
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(addon_zip) as src, zipfile.ZipFile(broken, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "blender_manifest.toml":
                data = data.decode().replace('tagline = "', 'tagline = "Much too long a tagline, really far too long '
                                             'for Blender to accept it. ').encode()
                data = data.replace(b', "windows-x64"]', b"]")
            if item.filename == "shared/jobs.py":
                data = b"import shared.spec\n" + data
            if not item.filename.endswith("win_amd64.whl"):
                dst.writestr(item, data)
    with pytest.raises(build_addon.BuildError) as e:
        build_addon.validate(broken)
    text = str(e.value)
    assert "tagline" in text and "platforms: missing windows-x64" in text
    assert "shared/jobs.py imports `shared` absolutely" in text
    assert "which is not in the zip" in text  # the manifest still lists the removed Windows wheel


def test_offline_build_needs_every_platform(tmp_path, wheels_dir):
    partial = tmp_path / "wheels"
    partial.mkdir()
    for w in wheels_dir.glob("*manylinux*.whl"):
        (partial / w.name).write_bytes(w.read_bytes())
    with pytest.raises(build_addon.BuildError, match="lacks cp311 pyzmq wheels for .*windows-x64"):
        build_addon.build(tmp_path / "x.zip", wheels_dir=partial, bundle_rig=False)


# --- in Blender ---------------------------------------------------------------------------------------------------
@needs_bpy
def test_installed_wheel_and_poll_messages(blender_user):
    got = run_bpy("""
        import glob, os
        site = glob.glob(os.path.join(os.environ["BLENDER_USER_RESOURCES"], "extensions", ".local", "lib",
                                      "python3.*", "site-packages", "zmq", "__init__.py"))
        msgs = {}
        for op, setup in (("generate", None), ("cancel", None), ("import_result", None)):
            try:
                getattr(bpy.ops.joker_head, op)()
            except RuntimeError as e:
                msgs[op] = str(e)
        prefs = bpy.context.preferences.addons[PKG].preferences
        prefs.backend_address = "tcp://10.11.12.13:5555"
        try:
            bpy.ops.joker_head.test_connection()
        except RuntimeError as e:
            msgs["remote"] = str(e)
        report(site=site, msgs=msgs, online=bpy.app.online_access, local=mod("net").is_local("tcp://127.0.0.1:1"))
    """, blender_user)
    assert got["site"], "Blender did not install the bundled pyzmq wheel"
    assert "Add a head rig first" in got["msgs"]["generate"]
    assert "No job is running" in got["msgs"]["cancel"]
    assert "No finished 3D result" in got["msgs"]["import_result"]
    assert not got["online"] and "Online access is off" in got["msgs"]["remote"] and "10.11.12.13" in got["msgs"]["remote"]
    assert got["local"]


@needs_bpy
@pytest.mark.slow
def test_rig_request_and_normal_map(blender_user, ict_npz, tmp_path):
    out = tmp_path / "request.npz"
    got = run_bpy(RIG_SCRIPT + f"""
    t0 = time.perf_counter()
    req = mod("request").build(scene, "generate")
    build_s = time.perf_counter() - t0
    scene.joker_head.normal_map_res = 128
    bpy.ops.joker_head.refresh_normal_map()  # the panel's button renders in a worker thread
    mod("live").collect(wait=True)
    img = mod("images").read_image(bpy.data.images["Joker Normal Map"])[..., :3]
    from dataclasses import asdict
    np.savez({str(out)!r}, vertices=req.inputs["vertices"], faces=req.inputs["faces"], image=img)
    report(keys=keys, expressions=model.expression_names, params=mod("shared.spec").to_dict(req.params),
           inputs=sorted(req.inputs), prompt=scene.joker_head.prompt, build_s=build_s)
    """, blender_user)
    from shared.conventions import orbit_camera
    from shared.framing import frame_rig_views
    from shared.jobs import GenerateParams
    from shared.morphable import MorphableModel
    from shared.presets import preset_weights
    from shared.raster import render_normal_map
    from shared.spec import from_dict

    model = MorphableModel.load(ict_npz)
    assert got["keys"][:2] == ["Basis", "Neutral"] and got["keys"][2:] == model.expression_names
    params = from_dict(GenerateParams, got["params"])
    rig = params.rig
    expected_expr = {**preset_weights("smile", model.expression_names), "jawOpen": 0.5}
    assert rig.expressions.keys() == expected_expr.keys()
    assert all(abs(rig.expressions[k] - v) < 1e-6 for k, v in expected_expr.items())
    assert np.allclose(rig.pose, (0.15, 0.3, 0.1), atol=1e-6)  # (pitch, yaw, roll) from the object's rotation
    assert np.allclose(rig.gaze, (0.25, -0.1), atol=1e-6) and rig.identity[0] == pytest.approx(1.2)
    assert "smiling" in got["prompt"]  # the preset suggested its prompt
    assert got["inputs"] == ["faces", "vertices"]

    data = np.load(out)
    expected = model.evaluate(rig.identity, rig.expressions, rig.pose, rig.gaze)  # location/scale are not sent
    assert data["vertices"].dtype == np.float32 and data["vertices"].shape == expected.shape
    np.testing.assert_allclose(data["vertices"], expected, atol=2e-6)
    assert np.array_equal(data["faces"], model.normal_region_faces)
    camera = orbit_camera(0.0, 0.0, res=128)
    reference = render_normal_map(expected, model.normal_region_faces, camera)
    sent = render_normal_map(data["vertices"], data["faces"], camera)
    assert (reference > 0).any(axis=-1).mean() > 0.2  # the face fills the view
    assert np.mean(np.abs(sent.astype(int) - reference.astype(int)) > 1) < 1e-3  # float32 rounding only
    # The panel's live preview is exactly the request's normal map, framed on the posed rig's 68 landmarks as the
    # backend frames its views (not the centred camera).
    (framed,), framing = frame_rig_views([camera], model, data["vertices"])
    assert framing == "reference" and abs(framed.K[1, 2] - camera.K[1, 2]) > 2  # the frame moved
    assert np.array_equal(data["image"], render_normal_map(data["vertices"], data["faces"], framed))


IMPORT_SCRIPT = """
    import importlib.util, trimesh
    from PIL import Image
    from mathutils import Matrix
    spec = importlib.util.spec_from_file_location("demo_scene", {demo!r})
    demo = importlib.util.module_from_spec(spec); spec.loader.exec_module(demo)

    # A stand-in result: the posed face region as a UV-textured GLB in the head frame, as the backend writes it.
    req = mod("request").build(scene, "generate")
    v, f = req.inputs["vertices"], req.inputs["faces"]
    used = np.unique(f)
    remap = np.zeros(len(v), np.int64); remap[used] = np.arange(len(used))
    verts, faces = v[used], remap[f]
    uv = (verts[:, :2] - verts[:, :2].min(0)) / np.ptp(verts[:, :2], axis=0)
    tex = np.zeros((64, 64, 3), np.uint8); tex[..., 0] = np.linspace(80, 255, 64)[None]; tex[..., 1] = 120
    mesh = trimesh.Trimesh(verts, faces, process=False,
                           visual=trimesh.visual.TextureVisuals(uv=uv, image=Image.fromarray(tex)))
    glb = Path({glb!r}); mesh.export(glb)

    state = scene.joker_head
    job = state.jobs.add()
    job.job_id, job.kind, job.state, job.result_path, job.rig_name = "ab" * 16, "generate", "done", str(glb), obj.name
    state.generate_job = job.job_id
    n_before = len(bpy.data.objects)
    mod("net").import_result(scene, job.job_id)
    head = bpy.data.objects["Joker Head " + job.job_id[:8]]

    dg = bpy.context.evaluated_depsgraph_get()
    rig_world = np.array([obj.matrix_world @ vv.co for vv in obj.evaluated_get(dg).to_mesh().vertices])[used]
    head_world = np.array([head.matrix_world @ vv.co for vv in head.data.vertices])
    mat = mod("importer").textured_material(head)
    mat = mat.name if mat else None
    placed = dict(rig_min=rig_world.min(0).tolist(), rig_max=rig_world.max(0).tolist(),
                  head_min=head_world.min(0).tolist(), head_max=head_world.max(0).tolist())
    hidden = (obj.hide_get(), obj.hide_render, obj.name in bpy.data.objects)
    same_collection = head.users_collection[0] == obj.users_collection[0]

    head_name, rig_name = head.name, obj.name
    bpy.ops.ed.undo()
    after_undo = dict(head_gone=head_name not in bpy.data.objects, n=len(bpy.data.objects), n_before=n_before,
                      rig_visible=not bpy.data.objects[rig_name].hide_get())
    bpy.ops.ed.redo()
    scene, rig_obj = bpy.context.scene, bpy.data.objects[rig_name]
    redone = head_name in bpy.data.objects and rig_obj.hide_get()

    origin = Matrix.Translation(rig_obj.matrix_world.translation)
    demo.add_camera(scene, 64, origin)
    demo.add_lights(scene, origin)
    px = demo.render(scene, Path({png!r}), samples=4, transparent=True)
    covered = px[..., 3] > 0.5
    report(uv_layers=len(bpy.data.objects[head_name].data.uv_layers), material=mat,
           placed=placed, hidden=hidden, same_collection=same_collection, undo=after_undo, redone=redone,
           coverage=float(covered.mean()), head_rgb=px[covered][:, :3].mean(0).tolist())
"""


@needs_bpy
@pytest.mark.slow
def test_import_lands_on_rig_renders_in_cycles_and_undoes(blender_user, ict_npz, tmp_path):
    script = RIG_SCRIPT + IMPORT_SCRIPT.format(demo=str(REPO / "blender_addon" / "demo_scene.py"),
                                               glb=str(tmp_path / "result.glb"), png=str(tmp_path / "render.png"))
    got = run_bpy(script, blender_user)
    p = got["placed"]
    np.testing.assert_allclose(p["head_min"], p["rig_min"], atol=1e-4)  # same frame, scale and place as the rig
    np.testing.assert_allclose(p["head_max"], p["rig_max"], atol=1e-4)
    assert got["material"] is not None, "no Principled BSDF with an image texture on Base Color"
    assert got["hidden"] == [True, True, True]  # hidden in viewport and render, not deleted
    assert got["same_collection"]
    assert 0.05 < got["coverage"] < 0.95, got["coverage"]  # the head is in the frame and not everywhere
    assert max(got["head_rgb"]) > 0.02  # lit and textured, not black
    assert got["uv_layers"] >= 1
    assert got["undo"]["head_gone"] and got["undo"]["rig_visible"] and got["undo"]["n"] == got["undo"]["n_before"]
    assert got["redone"]


# --- end to end: a backend process driven by the add-on's operators ------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models_without_joker(tmp_path_factory) -> Path:
    """Tiny weights for the training-free prior; the Joker checkpoint is absent, as before `fetch-models`."""
    from backend.prior import layout
    from testkit.tiny_prior import save_tiny_models

    models = save_tiny_models(tmp_path_factory.mktemp("models"))
    (models / layout.JOKER_CHECKPOINT).unlink()
    return models


E2E_SCRIPT = """
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.backend_address = {endpoint!r}
    prefs.results_dir = {results!r}
    net = mod("net")
    state = scene.joker_head
    ref = bpy.data.images.new("portrait", 48, 40)
    ref.pixels.foreach_set(np.tile([0.8, 0.6, 0.5, 1.0], 48 * 40).astype(np.float32))
    state.reference = ref
    state.prompt, state.prior_mode, state.quality, state.seed = "laughing, tongue out", "oracle", "draft", 7
    # The draft schedule compressed to 40 steps (both stages still run) and a coarse mesh: a test-sized job.
    state.max_steps, state.mesh_resolution, state.faces, state.texture = 40, "64", 2000, "256"

    bpy.ops.joker_head.test_connection()
    pump_until(lambda: state.connected, 20, "connection test")
    status = state.status
    bpy.ops.joker_head.generate()
    job_id = state.generate_job
    job = lambda: mod("props").find_job(bpy.context.scene, job_id)
    pump_until(lambda: job().state == "running", 60, "first progress")

    # Save, drop the connection, reopen: the file remembers the job and the add-on reattaches to it.
    blend = {blend!r}
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    net.close()
    bpy.ops.wm.open_mainfile(filepath=blend)
    reattached = net._session is not None and job_id in net._session.client.jobs
    seen = dict(overall=[], eta=[], stages=set())
    def done():
        j = job()
        seen["overall"].append(j.overall); seen["eta"].append(j.eta_s); seen["stages"].add(j.stage)
        return j.state in ("done", "failed", "cancelled") and (j.imported or j.state != "done")
    pump_until(done, {timeout}, "the generate job")
    scene = bpy.context.scene
    j = job()
    rig_obj = scene.joker_head.rig
    heads = [o for o in bpy.data.objects if o.name.startswith("Joker Head")]
    head = heads[0] if heads else None
    info = dict(state=j.state, error=j.error, hint=j.hint, result=j.result_path, imported=j.imported,
                job_id=job_id, status=status, reattached=reattached, overall=seen["overall"],
                eta=seen["eta"], stages=sorted(seen["stages"]), progress_image="Joker Progress" in bpy.data.images)
    def bbox_centre(o):  # world-space centre of the object's bounding box
        corners = np.array([o.matrix_world @ __import__("mathutils").Vector(c) for c in o.bound_box])
        return ((corners.min(0) + corners.max(0)) / 2).tolist()
    if head is not None:
        dg = bpy.context.evaluated_depsgraph_get()
        info.update(material=(mod("importer").textured_material(head) or bpy.types.Material).name if
                    mod("importer").textured_material(head) else None,
                    uv_layers=len(head.data.uv_layers), rig_hidden=rig_obj.hide_get(), rig_exists=True,
                    head_centre=bbox_centre(head),
                    rig_location=[float(c) for c in rig_obj.matrix_world.translation],
                    rig_centre=bbox_centre(rig_obj))
        head_name, rig_name = head.name, rig_obj.name
        bpy.ops.ed.undo()
        info["undo"] = (head_name not in bpy.data.objects, not bpy.data.objects[rig_name].hide_get())
        bpy.ops.ed.redo()
        from mathutils import Matrix
        import importlib.util
        spec = importlib.util.spec_from_file_location("demo_scene", {demo!r})
        demo = importlib.util.module_from_spec(spec); spec.loader.exec_module(demo)
        scene = bpy.context.scene
        origin = Matrix.Translation(bpy.data.objects[rig_name].matrix_world.translation)
        demo.add_camera(scene, 64, origin)
        demo.add_lights(scene, origin)
        px = demo.render(scene, Path({png!r}), samples=4, transparent=False)
        bpy.data.objects[head_name].hide_render = True
        bg = demo.render(scene, Path({png!r}).with_name("background.png"), samples=4, transparent=False)
        info["differs"] = float((np.abs(px - bg).max(axis=-1) > 0.02).mean())
    report(**info)
"""


@needs_bpy
@pytest.mark.slow
def test_end_to_end_generate_reattach_import_render(blender_user, ict_npz, tmp_path):
    backend = start_backend(tmp_path)
    try:
        got = run_bpy(RIG_SCRIPT + E2E_SCRIPT.format(
            endpoint=backend.endpoint, results=str(tmp_path / "results"), blend=str(tmp_path / "scene.blend"),
            timeout=180, demo=str(REPO / "blender_addon" / "demo_scene.py"), png=str(tmp_path / "render.png")),
            blender_user, timeout=400)
    finally:
        backend.stop()
    assert got["state"] == "done", (got["error"], got["hint"], backend.log.read_text()[-2000:])
    assert got["status"].startswith("connected to")
    assert got["reattached"]
    assert got["result"].endswith(".glb") and Path(got["result"]).is_file() and got["imported"]
    assert max(got["overall"]) > 0.3 and any(e > 0 for e in got["eta"]) and got["progress_image"]
    assert got["material"] and got["uv_layers"] >= 1
    assert got["rig_hidden"] and got["undo"] == [True, True]
    assert 0.0 < got["differs"] < 0.95  # the head shows in the Cycles render
    # landed on the rig: the completed head's bounding box (skull, ears, neck) centres where the rig's does
    assert np.linalg.norm(np.subtract(got["head_centre"], got["rig_centre"])) < 0.05
    # the head the add-on imported renders whole from every side in Cycles: 8 azimuths and one from above, no hole,
    # no backdrop-coloured (the oracle's backdrop) head pixel
    assert_turntable_clean(Path(got["result"]), tmp_path / "turntable")

    # What the server received is the posed rig: its normal map is the shared renderer's of the model's evaluation.
    from shared.conventions import orbit_camera
    from shared.jobs import GenerateParams
    from shared.morphable import MorphableModel
    from shared.png import decode_png
    from shared.raster import render_normal_map
    from shared.spec import from_dict

    job_dir = tmp_path / "jobs" / got["job_id"]
    request = json.loads((job_dir / "request.json").read_text())
    params = from_dict(GenerateParams, request["params"])
    assert params.prior.mode == "oracle" and params.distill.preset == "draft" and params.prompt.startswith("laughing")
    vertices = np.fromfile(job_dir / "inputs" / "vertices.bin", dtype="<f4").reshape(-1, 3)
    faces = np.fromfile(job_dir / "inputs" / "faces.bin", dtype="<i4").reshape(-1, 3)
    model = MorphableModel.load(ict_npz)
    rig = params.rig
    expected = model.evaluate(rig.identity, rig.expressions, rig.pose, rig.gaze)
    camera = orbit_camera(10.0, 5.0, res=96)
    sent, reference = render_normal_map(vertices, faces, camera), render_normal_map(expected, faces, camera)
    assert np.mean(np.abs(sent.astype(int) - reference.astype(int)) > 1) < 1e-3
    assert decode_png((job_dir / "inputs" / "reference.bin").read_bytes()).shape == (40, 48, 3)


FAILURE_SCRIPT = """
    prefs = bpy.context.preferences.addons[PKG].preferences
    state = scene.joker_head
    net = mod("net")
    job = lambda job_id: mod("props").find_job(bpy.context.scene, job_id)

    # Nobody listening: the connection test gives up after the timeout and says what to check.
    prefs.timeout_s, prefs.backend_address = 1.0, "tcp://127.0.0.1:{dead_port}"
    bpy.ops.joker_head.test_connection()
    t0 = time.monotonic()
    pump_until(lambda: state.status.startswith("no reply"), 10, "the connection test timeout")
    dead = dict(status=state.status, waited=time.monotonic() - t0, connected=state.connected)

    # Cancel a running job.
    prefs.timeout_s, prefs.backend_address = 10.0, {endpoint!r}
    state.prior_mode = "oracle"
    bpy.ops.joker_head.generate()
    gen = state.generate_job
    pump_until(lambda: job(gen).state == "running", 60, "the job to start")
    blocked = None
    try:
        bpy.ops.joker_head.generate()
    except RuntimeError as e:
        blocked = str(e)
    bpy.ops.joker_head.cancel()
    pump_until(lambda: job(gen).state == "cancelled", 30, "the cancel")

    # The oracle prior has no 2D preview: the button says so.
    oracle, state.prior_mode = None, "oracle"
    try:
        bpy.ops.joker_head.preview()
    except RuntimeError as e:
        oracle = str(e)

    # A 2D preview lands in the "Joker Preview" image.
    state.prior_mode, state.preview_steps, state.view_az = "free", 3, 20.0
    bpy.ops.joker_head.preview()
    ok = state.preview_job
    pump_until(lambda: job(ok).state == "done", 60, "the preview")
    preview = mod("images").read_image(bpy.data.images["Joker Preview"])[..., :3]
    scene.joker_head.normal_map_res = 64
    normals = mod("live").normal_map(bpy.context.scene)
    # what the prior saw: the preview job's own normal map, beside its image
    backend_normals = mod("shared.png").decode_png((Path(job(ok).result_path).parent / "normals.png").read_bytes())
    np.savez({normals_out!r}, live=normals, backend=backend_normals)

    # An artist's own base model travels with the request; one the backend lacks fails naming the file.
    state.base_model = "my-finetune.safetensors"
    bpy.ops.joker_head.preview()
    own = state.preview_job
    pump_until(lambda: job(own).state == "failed", 60, "the preview with a missing fine-tune")
    state.base_model = ""

    # A failure reported by the backend reaches the panel with its hint.
    state.prior_mode = "joker"
    bpy.ops.joker_head.preview()
    prev = state.preview_job
    pump_until(lambda: job(prev).state == "failed" and job(prev).hint, 60, "the preview failure and its hint")
    report(dead=dead, blocked=blocked, cancelled=job(gen).state, cancel_msg=job(gen).message, oracle=oracle,
           preview_path=job(ok).result_path, preview_shape=list(preview.shape), preview_std=float(preview.std()),
           preview_is_normals=preview.shape == normals.shape and bool(np.array_equal(preview, normals)),
           error=job(prev).error, hint=job(prev).hint, timer=net.pump() is None,
           own_model=job(own).error + " | " + job(own).hint)
"""


@needs_bpy
@pytest.mark.slow
def test_unreachable_cancel_and_errors_with_hints(blender_user, ict_npz, tmp_path, tiny_models_without_joker):
    from tests.support import free_port

    backend = start_backend(tmp_path, tiny_models_without_joker)
    try:
        got = run_bpy(RIG_SCRIPT + FAILURE_SCRIPT.format(dead_port=free_port(), endpoint=backend.endpoint,
                                                         normals_out=str(tmp_path / "normals.npz")),
                      blender_user)
    finally:
        backend.stop()
    assert "is `joker-head serve` running" in got["dead"]["status"] and not got["dead"]["connected"]
    assert 0.9 < got["dead"]["waited"] < 5
    assert "A generate job is running" in got["blocked"]
    assert got["cancelled"] == "cancelled"
    assert "oracle prior has no 2D preview" in got["oracle"]
    # The real preview job ran the training-free prior (tiny random weights): an image, not the normal map.
    assert got["preview_path"].endswith("image.png") and got["preview_shape"][2] == 3 and got["preview_std"] > 0
    assert not got["preview_is_normals"]
    # The panel's live normal map is the one the preview job fed the prior: same rig state, view (az 20) and size,
    # both framed on the rig's 68 landmarks (shared.framing); the two rasterizers (numpy in Blender, torch in the
    # backend) may round a silhouette pixel differently.
    maps = np.load(tmp_path / "normals.npz")
    live, sent = maps["live"].astype(int), maps["backend"][..., :3].astype(int)
    assert live.shape == sent.shape == (64, 64, 3)
    assert (live > 0).any(axis=-1).mean() > 0.2  # the face fills the view
    differs = np.abs(live - sent).max(axis=-1) > 1
    assert differs.sum() <= 1, f"{differs.sum()} pixels differ"
    assert "missing" in got["error"] and "bfm_ft_NersembleCelebvtext_230000.bin" in got["error"]
    assert "fetch-models --mode joker" in got["hint"]
    assert "my-finetune.safetensors" in got["own_model"] and "your fine-tune" in got["own_model"], got["own_model"]
    assert got["timer"]  # nothing in flight: the timer stops


@needs_bpy
def test_panels_draw_every_control(blender_user, ict_npz):
    got = run_bpy(RIG_SCRIPT + UI_SCRIPT, blender_user)
    logs = got["logs"]
    generate = logs["JOKER_PT_generate"]
    assert "progress:distill 3/10" in generate and any(e.startswith("progress:overall 25 %  ETA 2 min 05 s")
                                                       for e in generate)
    assert "label:out of memory" in generate and "label:choose a smaller preset" in generate
    assert "prop:base_model" in generate
    assert any(e.startswith("template_icon") for e in generate)  # the streamed preview is shown
    assert any(e.startswith("template_list") for e in logs["JOKER_PT_rig"])
    assert any("Contacts tcp://127.0.0.1:5555 (this machine)" in e for e in logs["JOKER_PT_main"])


SPEC_PROPS_SCRIPT = """
    import dataclasses, importlib, types
    specprops, props = mod("specprops"), mod("props")

    def rna(group, prop):
        return getattr(props, group).bl_rna.properties[prop]  # the registered class (rebuilt below)

    def seen(group, prop):
        p = rna(group, prop)
        out = dict(type=p.type, description=p.description)
        if p.type in ("INT", "FLOAT"):
            out.update(min=p.hard_min, max=p.hard_max, default=p.default)
        elif p.type == "ENUM":
            out.update(items=[i.identifier for i in p.enum_items], default=p.default)
        elif p.type == "STRING":
            out.update(maxlen=p.length_max, default=p.default)
        return out

    mirrors = {f"{g}.{p}": [cls.__module__.rsplit(".shared.", 1)[-1], cls.__name__, name, seen(g, p)]
               for (g, p), (cls, name) in specprops.MIRRORS.items()}

    # Change spec limits in the add-on's own copy of shared/, rebuild the properties: they follow.
    export = mod("shared.config.export").ExportConfig
    preview = mod("shared.jobs").PreviewParams
    def patch(cls, name, **changes):
        f = next(f for f in dataclasses.fields(cls) if f.name == name)
        old = f.metadata
        f.metadata = types.MappingProxyType({**old, **changes})
        return lambda: setattr(f, "metadata", old)
    undo = [patch(export, "faces", hi=200_000, doc="fewer faces"), patch(export, "texture", choices=(512, 1024)),
            patch(export, "resolution", lo=100), patch(preview, "az_deg", lo=-30.0, hi=30.0)]
    def rebuild():
        global props
        props.unregister()
        props = importlib.reload(props)
        props.register()
    rebuild()
    changed = {k: seen("JokerState", k) for k in ("faces", "texture", "mesh_resolution", "view_az")}
    for u in undo:
        u()
    rebuild()
    restored = seen("JokerState", "faces")
    report(mirrors=mirrors, changed=changed, restored=restored)
"""


@needs_bpy
def test_properties_that_mirror_spec_fields_take_the_specs_limits(blender_user):
    import dataclasses
    import importlib

    got = run_bpy(SPEC_PROPS_SCRIPT, blender_user)
    mirrors = got["mirrors"]
    # what the add-on's properties mirror: every request field the panel sets
    assert {"JokerState.cfg", "JokerState.preview_cfg", "JokerState.preview_steps", "JokerState.seed",
            "JokerState.prompt", "JokerState.negative_prompt", "JokerState.view_az", "JokerState.view_el",
            "JokerState.faces", "JokerState.texture", "JokerState.mesh_resolution", "JokerState.prior_mode",
            "JokerState.base_model", "JokerState.reference_framing", "JokerState.max_steps", "JokerState.quality",
            "JokerRigSettings.gaze_yaw", "JokerRigSettings.gaze_pitch", "JokerIdentityWeight.value",
            "JokerRigSettings.model"} <= set(mirrors)
    # where the add-on means something else, it says so in props.py (and nowhere else)
    own_min = {"JokerState.max_steps": 0}  # 0: the preset's own step count
    own_default = {"JokerState.preview_steps": 25, "JokerState.max_steps": 0, "JokerState.base_model": ""}
    own_doc = {"JokerState.max_steps", "JokerState.base_model", "JokerState.quality", "JokerRigSettings.gaze_yaw",
               "JokerRigSettings.gaze_pitch"}
    for key, (module, cls_name, field_name, prop) in mirrors.items():
        cls = getattr(importlib.import_module(f"shared.{module}"), cls_name)
        f = next(f for f in dataclasses.fields(cls) if f.name == field_name)
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if key not in own_doc:
            assert prop["description"] == meta["doc"], key
        if prop["type"] in ("INT", "FLOAT"):
            lo, hi = meta["lo"], meta["hi"]
            if prop["type"] == "INT":
                hi = min(hi, 2**31 - 1)  # Blender ints are 32-bit
            assert prop["min"] == pytest.approx(own_min.get(key, lo)) and prop["max"] == pytest.approx(hi), key
            if not isinstance(default, tuple):
                assert prop["default"] == pytest.approx(own_default.get(key, default)), key
        elif prop["type"] == "ENUM":
            choices = meta["choices"]
            if choices:
                assert prop["items"] == [str(c) for c in choices], key
            else:  # a range offered as a menu: every item inside the spec's bounds
                assert prop["items"] and all(meta["lo"] <= int(i) <= meta["hi"] for i in prop["items"]), key
            assert prop["default"] == str(default) or key == "JokerState.quality", key
        elif prop["type"] == "STRING":
            # Blender's length_max counts the NUL terminator it adds to maxlen: max_len characters fit
            assert prop["maxlen"] == meta["max_len"] + 1 and prop["default"] == own_default.get(key, default), key
    assert mirrors["JokerState.seed"][3]["max"] == 2**31 - 1  # the spec's 2**32 - 1, clamped to Blender's ints

    # a changed spec bound changes the property (the add-on's vendored shared/, properties rebuilt)
    changed = got["changed"]
    assert changed["faces"]["max"] == 200_000 and changed["faces"]["description"] == "fewer faces"
    assert changed["texture"]["items"] == ["512", "1024"]
    assert changed["mesh_resolution"]["items"] == ["128", "192", "256", "384", "512"]
    assert changed["view_az"]["min"] == -30.0 and changed["view_az"]["max"] == 30.0
    assert got["restored"]["max"] == 1_000_000


NEUTRAL_SCRIPT = """
    rig = mod("rig")
    bpy.ops.joker_head.add_rig()
    obj = bpy.context.scene.joker_head.rig
    fresh = rig.expression_weights(obj)
    obj.data.shape_keys.key_blocks["jawOpen"].value = 0.6
    report(fresh=fresh, set=rig.expression_weights(obj))
"""


@needs_bpy
def test_a_new_rig_starts_neutral(blender_user, ict_npz):
    """Blender 5 gives a new shape key the value 1.0: every expression of a freshly added rig must still read 0."""
    got = run_bpy(NEUTRAL_SCRIPT, blender_user)
    assert got["fresh"] == {}
    assert got["set"] == {"jawOpen": pytest.approx(0.6)}

"""Shared fixtures, defined once here; helpers that are not fixtures live in tests/support.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import ICT_NPZ, REPO


@pytest.fixture(scope="session")
def ict_npz() -> Path:
    """The team's ICT-FaceKit archive in ../shared; tests that need it skip with a reason where it is absent."""
    if not ICT_NPZ.exists():
        pytest.skip(f"the ICT-FaceKit archive is not at {ICT_NPZ} (set JOKER_SHARED_DATA to the team's shared folder)")
    return ICT_NPZ


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``gpu`` skip with a reason on machines without CUDA."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu and not cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU; the pure-PyTorch twin runs on CPU")
        for item in gpu:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> Path:
    """A models dir with tiny random SD1.5 / ControlNet / Joker-checkpoint weights, built once per session."""
    from testkit.tiny_prior import ensure_tiny_models

    return ensure_tiny_models(tmp_path_factory.getbasetemp() / "prior-models")


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (the CPU is shared: one thread is faster than two fighting).
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- ZeroMQ fixtures (pyzmq style: random ports, linger 0, every socket closed) ---------------------------------------

@pytest.fixture
def zmq_context():
    import zmq

    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def make_server(tmp_path, zmq_context):
    """Start a real server on a random loopback port; ``make_server(runners=..., **config)``; stopped afterwards."""
    from backend.jobs.selftest import SelftestRunner
    from backend.server import Server, ServerConfig

    servers = []

    def start(runners=None, jobs_dir=None, **config):
        cfg = ServerConfig(bind=config.pop("bind", "tcp://127.0.0.1:*"), jobs_dir=jobs_dir or tmp_path / "jobs",
                           heartbeat_s=config.pop("heartbeat_s", 0.5), **config)
        server = Server(cfg, runners or {"selftest": SelftestRunner()}, context=zmq_context).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def make_client(zmq_context):
    from shared.client import Client

    clients = []

    def connect(endpoint, **kw):
        kw.setdefault("timeout_s", 2.0)
        kw.setdefault("heartbeat_s", 0.3)
        client = Client(endpoint, context=zmq_context, **kw)
        clients.append(client)
        return client

    yield connect
    for c in clients:
        c.close()


def pytest_report_header(config) -> str:
    from tests.addon_harness import BLENDER_PYTHON, blender_version

    return f"blender: {blender_version() or 'not found'} (bpy scripts run under {BLENDER_PYTHON})"


# --- portrait fitting (backend/fit): real photos that installed packages ship, the ICT rig ---------------------------

def _package_file(package: str, *parts: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:  # a declared dependency: its absence is a failure
        pytest.fail(f"{package} is not installed, and the fit tests read its real photos: run "
                    "pip install -e '.[backend,dev]' (make test does)")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    """scikit-image's astronaut.png: a real portrait (Eileen Collins, NASA, public domain), 512², face off-centre."""
    return _package_file("skimage", "data", "astronaut.png")


@pytest.fixture(scope="session")
def hopper_path() -> Path:
    """matplotlib's grace_hopper.jpg: a real portrait (US Navy, public domain), 512x600 JPEG."""
    return _package_file("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")


@pytest.fixture(scope="session")
def cameraman_path() -> Path:
    """scikit-image's camera.png: a real photo (a photographer behind a camera, CC0 by Lav Varshney), 512² gray, a
    small face (~80 px) in three-quarter profile: the hard case for the crop's stability."""
    return _package_file("skimage", "data", "camera.png")


@pytest.fixture(scope="session")
def faceless_paths() -> list[Path]:
    """Real photos without a face: scikit-image's coffee cup, cat and rocket."""
    return [_package_file("skimage", "data", name) for name in ("coffee.png", "chelsea.png", "rocket.jpg")]


@pytest.fixture(scope="session")
def ict_rig(ict_npz):
    from shared.morphable import MorphableModel

    return MorphableModel.load(ict_npz)


# --- the Blender add-on, built and installed once per session (tests/test_addon*.py) ---------------------------------
def _build_addon():
    """build_addon.py, the repo-root script that builds the extension zip."""
    import sys

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import build_addon

    return build_addon


@pytest.fixture(scope="session")
def wheels_dir() -> Path:
    """The repo's wheel cache, filled from PyPI on the very first run only; every later run is offline.

    No skip: without the wheels the add-on cannot be built, and the add-on tests are headline tests."""
    build_addon = _build_addon()
    try:
        build_addon.download_wheels()
    except build_addon.BuildError as e:
        pytest.fail(f"the add-on needs pyzmq wheels: PyPI was unreachable and .cache/wheels is empty ({e}); run "
                    "the tests once with PyPI reachable, or copy the wheels into .cache/wheels")
    return build_addon.CACHE_WHEELS


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory, wheels_dir) -> Path:
    out = tmp_path_factory.mktemp("dist") / "joker_head.zip"
    _build_addon().build(out, wheels_dir=wheels_dir)
    return out


@pytest.fixture(scope="session")
def blender_user(tmp_path_factory, addon_zip) -> Path:
    """A user-resources folder with the extension installed (and its pyzmq wheel) by Blender's own installer."""
    user = tmp_path_factory.mktemp("blender") / "user"
    user.mkdir()
    from tests.addon_harness import run_bpy

    got = run_bpy(f"""
        import bpy, sys, json
        r = bpy.ops.extensions.package_install_files(repo="user_default", filepath={str(addon_zip)!r},
                                                      enable_on_install=True)
        print("JOKER_RESULT:" + json.dumps({{"result": list(r), "enabled": list(bpy.context.preferences.addons.keys()),
              "registered": hasattr(bpy.types.Scene, "joker_head")}}))
    """, user, prelude=False)
    assert got["result"] == ["FINISHED"]
    assert "bl_ext.user_default.joker_head" in got["enabled"] and got["registered"]
    return user

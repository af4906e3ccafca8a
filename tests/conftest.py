"""Shared fixtures. ``SHARED_DATA`` is the team-provided folder beside the checkout (../shared), not our package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("JOKER_SHARED_DATA", REPO.parent / "shared"))
ICT_NPZ = SHARED_DATA / "models" / "ict-facekit" / "ict_facekit_f16.npz"
ICT_SUBSET = SHARED_DATA / "models" / "ict-facekit" / "FaceXModel-subset"


@pytest.fixture(scope="session")
def ict_npz() -> Path:
    if not ICT_NPZ.exists():
        pytest.skip(f"the ICT-FaceKit archive is not at {ICT_NPZ} (set JOKER_SHARED_DATA to the team's shared folder)")
    return ICT_NPZ


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


_skip_without_cuda = pytest.mark.skipif(not cuda_available(),
                                        reason="needs a CUDA GPU; the pure-PyTorch twin runs on CPU")


def requires_cuda(test):
    """Marks a CUDA test: ``gpu`` (``pytest -m gpu``, what bench/gpu_check.sh runs) and skipped without CUDA."""
    return pytest.mark.gpu(_skip_without_cuda(test))


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
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install 'joker-head[backend]')")
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
def faceless_paths() -> list[Path]:
    """Real photos without a face: scikit-image's coffee cup, cat and rocket."""
    return [_package_file("skimage", "data", name) for name in ("coffee.png", "chelsea.png", "rocket.jpg")]


@pytest.fixture(scope="session")
def ict_rig(ict_npz):
    from shared.morphable import MorphableModel

    return MorphableModel.load(ict_npz)

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


requires_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA GPU; the pure-PyTorch twin runs on CPU")

"""Where joker-head keeps user data: downloaded rigs, model weights, the backend's jobs.

One root, overridable with the environment variable ``JOKER_HEAD_HOME``:
    <root>/rigs/<name>.npz       converted morphable models (see shared.morphable)
    <root>/models/               prior weights (layout in docs/MODELS.md)
    <root>/jobs/                 the server's default jobs dir
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def data_root() -> Path:
    """The per-user data folder (created on demand by the callers that write into it)."""
    env = os.environ.get("JOKER_HEAD_HOME")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "joker-head"


def rigs_dir() -> Path:
    return data_root() / "rigs"


def models_dir() -> Path:
    return Path(os.environ["JOKER_HEAD_MODELS"]).expanduser() if "JOKER_HEAD_MODELS" in os.environ \
        else data_root() / "models"


def jobs_dir() -> Path:
    return data_root() / "jobs"

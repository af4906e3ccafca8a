#!/usr/bin/env python3
"""Build the installable Blender extension zip: the add-on, the project's ``shared/`` package vendored inside it,
pyzmq wheels for every supported platform and the default rig data (with its licence), then validate the result.

    python build_addon.py --output dist/joker_head.zip            # downloads wheels once into .cache/wheels
    python build_addon.py --wheels-dir DIR --output joker_head.zip  # offline: wheels already in DIR

Zip layout (the zip root is the extension)::

    blender_manifest.toml   with platforms and wheels filled in
    __init__.py, *.py        the add-on (blender_addon/)
    shared/                  the project's shared package, imported relatively (``from .shared import ...``)
    wheels/pyzmq-*.whl       unmodified PyPI wheels (Blender installs them on install)
    data/ict.npz             ICT-FaceKit converted to the rig format, data/LICENSE-ICT-FaceKit.txt
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

REPO = Path(__file__).resolve().parent
ADDON_SRC = REPO / "blender_addon"
SHARED_SRC = REPO / "shared"
CACHE_WHEELS = REPO / ".cache" / "wheels"
PYZMQ = "pyzmq>=26,<28"
BLENDER_PYTHON = (3, 11)  # Blender 4.2 - 4.5 LTS
EXCLUDE = re.compile(r"(__pycache__|\.pyc$|\.pyo$|^demo_scene\.py$)")
# Blender platform -> pip --platform tags to ask for, and the wheel platform tags that serve it.
PLATFORMS = {
    "linux-x64": (("manylinux_2_28_x86_64", "manylinux2014_x86_64"), r"manylinux\w*_x86_64"),
    "windows-x64": (("win_amd64",), r"win_amd64"),
    "macos-arm64": (("macosx_11_0_arm64",), r"macosx_\d+_\d+_(arm64|universal2)"),
    "macos-x64": (("macosx_10_15_x86_64",), r"macosx_\d+_\d+_(x86_64|universal2)"),
}
WHEEL_RE = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$")
REQUIRED_MANIFEST = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type",
                     "blender_version_min", "license")


class BuildError(RuntimeError):
    pass


# --- wheels -------------------------------------------------------------------------------------------------------
def python_ok(py: str, abi: str) -> bool:
    """Can Blender's Python (3.11) load a wheel with these tags?"""
    want = "cp%d%d" % BLENDER_PYTHON
    if abi == "abi3":
        return any(int(t[2:]) <= int(want[2:]) for t in py.split(".") if re.fullmatch(r"cp3\d+", t))
    return want in py.split(".") and abi in (want, "none")


def serves(wheel: str, platform: str) -> bool:
    m = WHEEL_RE.match(wheel)
    if not m:
        return False
    return python_ok(m["py"], m["abi"]) and any(re.fullmatch(PLATFORMS[platform][1], p)
                                                for p in m["plat"].split("."))


def _version_key(path: Path) -> tuple:
    m = WHEEL_RE.match(path.name)
    return tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[.]", m["version"])) if m else ()


def wheels_for(folder: Path) -> dict[str, Path]:
    """platform -> the newest pyzmq wheel in ``folder`` that serves it (missing platforms left out)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("pyzmq-*.whl"), key=_version_key):  # a newer version wins
        for platform in PLATFORMS:
            if serves(path.name, platform):
                found[platform] = path
    return found


def download_wheels(cache: Path = CACHE_WHEELS) -> dict[str, Path]:
    """Fill ``cache`` with a pyzmq wheel per platform (only those missing), using pip against PyPI."""
    cache.mkdir(parents=True, exist_ok=True)
    have = wheels_for(cache)
    for platform, (tags, _) in PLATFORMS.items():
        if platform in have:
            continue
        cmd = [sys.executable, "-m", "pip", "download", PYZMQ, "--only-binary=:all:", "--no-deps", "-q",
               "--python-version", "%d.%d" % BLENDER_PYTHON, "--implementation", "cp", "-d", str(cache)]
        for tag in tags:
            cmd += ["--platform", tag]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode != 0:
            raise BuildError(f"pip could not download pyzmq for {platform}: {out.stderr.strip()[-800:]}\n"
                             "Build offline with --wheels-dir DIR holding the four pyzmq wheels.")
        have = wheels_for(cache)
    return have


# --- rig data -----------------------------------------------------------------------------------------------------
def find_rig_source() -> Optional[Path]:
    """The rig to bundle: the first that exists of the places the add-on and backend search too
    (``shared.morphable.default_rig_candidates``: $JOKER_HEAD_RIG, the user data dir, ../shared beside the checkout)."""
    sys.path.insert(0, str(REPO))
    from shared.morphable import default_rig_candidates

    return next((p for p in default_rig_candidates("ict") if p.is_file()), None)


def stage_rig(source: Path, data_dir: Path) -> list[Path]:
    """Convert the rig to the rig format (metres, head frame) into data/ict.npz and write its licence beside it."""
    sys.path.insert(0, str(REPO))
    from shared.morphable import MorphableModel

    model = MorphableModel.load(source)
    data_dir.mkdir(parents=True, exist_ok=True)
    out = model.save(data_dir / "ict.npz")
    licence = data_dir / "LICENSE-ICT-FaceKit.txt"
    licence.write_text(model.license or (source.parent / "LICENSE").read_text())
    return [out, licence]


# --- staging and zipping ------------------------------------------------------------------------------------------
def _copy_tree(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_dir() or any(EXCLUDE.search(part) for part in rel.parts):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst / rel)


def manifest_text(platforms: Iterable[str], wheels: Iterable[str]) -> str:
    text = (ADDON_SRC / "blender_manifest.toml").read_text()
    listing = lambda xs: "[" + ", ".join(f'"{x}"' for x in xs) + "]"  # noqa: E731
    extra = f"platforms = {listing(platforms)}\nwheels = {listing(wheels)}\n\n"
    return text.replace("[permissions]", extra + "[permissions]", 1)


def stage(dest: Path, wheels: dict[str, Path], rig_source: Optional[Path]) -> Path:
    """Lay out the extension's files in ``dest`` (the future zip root)."""
    _copy_tree(ADDON_SRC, dest)
    _copy_tree(SHARED_SRC, dest / "shared")
    (dest / "wheels").mkdir(exist_ok=True)
    names = sorted({p.name for p in wheels.values()})
    for path in set(wheels.values()):
        shutil.copy2(path, dest / "wheels" / path.name)
    (dest / "blender_manifest.toml").write_text(manifest_text(sorted(wheels), [f"./wheels/{n}" for n in names]))
    if rig_source is not None:
        stage_rig(rig_source, dest / "data")
    return dest


def write_zip(src: Path, output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for path in sorted(src.rglob("*")):
            if path.is_file():
                stored = path.suffix in (".whl", ".npz", ".png")  # already compressed
                zf.write(path, path.relative_to(src).as_posix(),
                         compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    os.replace(tmp, output)
    return output


# --- validation ---------------------------------------------------------------------------------------------------
@dataclass
class Report:
    files: int
    platforms: list[str]
    wheels: list[str]
    rig: bool


def validate(zip_path: Path) -> Report:
    """Check what Blender and users rely on; raises BuildError listing every problem."""
    problems: list[str] = []
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        for must in ("blender_manifest.toml", "__init__.py", "shared/__init__.py", "shared/client.py"):
            if must not in names:
                problems.append(f"{must} missing at the zip root")
        manifest = tomllib.loads(zf.read("blender_manifest.toml").decode()) if "blender_manifest.toml" in names else {}
        problems += _manifest_problems(manifest)
        wheels = [w.removeprefix("./") for w in manifest.get("wheels", [])]
        for w in wheels:
            if w not in names:
                problems.append(f"manifest lists {w}, which is not in the zip")
        for platform in manifest.get("platforms", []):
            if not any(serves(Path(w).name, platform) for w in wheels):
                problems.append(f"no pyzmq wheel with cp311 tags for {platform}")
        problems += _source_problems(zf, names)
        rig = "data/ict.npz" in names
        if rig and "data/LICENSE-ICT-FaceKit.txt" not in names:
            problems.append("the ICT-FaceKit data is bundled without its MIT licence")
    if problems:
        raise BuildError(f"{zip_path} is not a valid extension:\n  - " + "\n  - ".join(problems))
    return Report(len(names), list(manifest["platforms"]), wheels, rig)


def _manifest_problems(m: dict) -> list[str]:
    problems = [f"manifest field {k} missing" for k in REQUIRED_MANIFEST if k not in m]
    if m.get("schema_version") != "1.0.0":
        problems.append(f"schema_version: expected 1.0.0, received {m.get('schema_version')}")
    if not re.fullmatch(r"\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?", str(m.get("version", ""))):
        problems.append(f"version: expected semver, received {m.get('version')}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", str(m.get("id", ""))):
        problems.append(f"id: expected a Python identifier in lower case, received {m.get('id')}")
    tagline = str(m.get("tagline", ""))
    if len(tagline) > 64 or tagline[-1:] in ".,;:!?":
        problems.append(f"tagline: at most 64 characters without trailing punctuation, received {tagline!r}")
    if m.get("type") != "add-on":
        problems.append(f"type: expected add-on, received {m.get('type')}")
    if tuple(int(x) for x in str(m.get("blender_version_min", "0.0.0")).split(".")) < (4, 2, 0):
        problems.append("blender_version_min: extensions need 4.2.0 or later")
    if not all(str(lic).startswith("SPDX:") for lic in m.get("license", [])):
        problems.append("license: entries must be SPDX:<identifier>")
    for key, reason in m.get("permissions", {}).items():
        if key not in ("network", "files", "clipboard", "camera", "microphone"):
            problems.append(f"permissions.{key}: unknown permission")
        if not reason or len(reason) > 64 or reason[-1:] in ".,;:!?":
            problems.append(f"permissions.{key}: a reason of at most 64 characters without trailing punctuation")
    missing = set(PLATFORMS) - set(m.get("platforms", []))
    if missing:
        problems.append(f"platforms: missing {', '.join(sorted(missing))}")
    return problems


def _source_problems(zf: zipfile.ZipFile, names: set[str]) -> list[str]:
    """The vendored package must import relatively; the add-on must never pull in torch, diffusers or backend."""
    problems = []
    for name in sorted(n for n in names if n.endswith(".py")):
        text = zf.read(name).decode("utf-8")
        if re.search(r"^\s*(from|import)\s+shared\b", text, re.M):
            problems.append(f"{name} imports `shared` absolutely: inside the extension it must be relative")
        if re.search(r"^\s*(from|import)\s+(torch|diffusers|backend)\b", text, re.M):
            problems.append(f"{name} imports torch, diffusers or backend: the add-on never does")
    return problems


# --- entry point --------------------------------------------------------------------------------------------------
def build(output: Path, wheels_dir: Optional[Path] = None, rig: Optional[Path] = None, bundle_rig: bool = True) -> Report:
    """Build and validate the zip at ``output``; returns what it holds."""
    if wheels_dir is not None:
        wheels = wheels_for(wheels_dir)
        missing = set(PLATFORMS) - set(wheels)
        if missing:
            raise BuildError(f"--wheels-dir {wheels_dir} lacks cp311 pyzmq wheels for {', '.join(sorted(missing))} "
                             f"(download them with: pip download '{PYZMQ}' --only-binary=:all: --python-version 3.11 "
                             "--platform TAG -d DIR)")
    else:
        wheels = download_wheels()
    rig_source = (rig or find_rig_source()) if bundle_rig else None
    with tempfile.TemporaryDirectory(prefix="joker-addon-") as tmp:
        write_zip(stage(Path(tmp) / "joker_head", wheels, rig_source), output)
    return validate(output)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=REPO / "dist" / "joker_head.zip", help="the zip to write")
    ap.add_argument("--wheels-dir", type=Path, default=None,
                    help=f"use the pyzmq wheels in this folder (offline); default: download into {CACHE_WHEELS}")
    ap.add_argument("--rig", type=Path, default=None, help="rig to bundle (default: the ICT-FaceKit data if found)")
    ap.add_argument("--no-rig", action="store_true", help="do not bundle rig data")
    args = ap.parse_args(argv)
    try:
        report = build(args.output, args.wheels_dir, args.rig, not args.no_rig)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = args.output.stat().st_size / 1e6
    print(f"wrote {args.output} ({size:.1f} MB, {report.files} files): platforms {', '.join(report.platforms)}; "
          f"{len(report.wheels)} wheels; rig data {'bundled' if report.rig else 'not bundled (none found)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

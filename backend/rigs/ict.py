"""ICT-FaceKit from its original ``FaceXModel/`` layout: OBJ reader, converter and ``fetch-rig ict``.

The original folder holds ``generic_neutral_mesh.obj`` (topology, UVs, materials), ``identity000..099.obj`` and one
OBJ per expression named in ``vertex_indices.json["expressions"]``, all with the same vertex order; a basis is its
OBJ's vertices minus the neutral's. The converter builds the team-archive layout (centimetres, quads, float16
deltas) and hands it to :func:`shared.ict.arrays_from_archive`, so both paths give the same rig.

GitHub's archive zips are not byte-stable, so the download is not pinned by the zip's checksum; instead the
extracted files whose content is known (the subset shipped to the team, same commit) are checked by sha256.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional

import numpy as np

from backend.download import download, sha256_file
from shared import ict
from shared.errors import JokerError
from shared.morphable import MorphableModel
from shared.paths import rigs_dir

ICT_URL = f"https://github.com/ICT-VGL/ICT-FaceKit/archive/{ict.COMMIT}.zip"
# sha256 of original files at the pinned commit (identical to ../shared/models/ict-facekit/FaceXModel-subset).
KNOWN_SHA256 = {
    "generic_neutral_mesh.obj": "eedbc2576d8e5ea57f55255b8f98263213a1efb5431d8bfceed1d7aef10271f9",
    "identity000.obj": "918160cf82d541336b4c367cf93199c9827832bde02511b8fbdf9019d6f1a773",
    "jawOpen.obj": "8d84355e10f48b05550980cee385bcd426f4797090da76a20de0535bb2f99f4a",
    "mouthSmile_L.obj": "91794e73cef330f1c7d1f4541723544708536b39d5dd6ed35fd8f83f676b7af4",
    "vertex_indices.json": "4f9b35306299980dd46bee4a6b79bb95dfae1953693b74b35a64f7febfd081a5",
    "ICTFaceModelMaterial.mtl": "9c2c6daf384a2d1f5536d330339a897a312f57d89587b9be31bec7fe7b37c297",
}
Progress = Callable[[str, float], None]  # (stage, fraction 0..1)


class RigFetchError(JokerError, RuntimeError):
    """A download, checksum or layout problem; the message says what to do."""

    default_code = "rig_fetch_failed"


@dataclass(frozen=True)
class ICTSource:
    """What to download and convert. The defaults are the pinned full model (100 identities, 53 expressions)."""

    url: str = ICT_URL
    n_identity: int = 100
    expressions: Optional[tuple[str, ...]] = None  # None: every name in vertex_indices.json
    known_sha256: Mapping[str, str] = field(default_factory=lambda: dict(KNOWN_SHA256))


# --- OBJ reading ---------------------------------------------------------------------------------------------------
def _lines(path: Path, tag: bytes) -> list[bytes]:
    return [ln[len(tag):] for ln in Path(path).read_bytes().splitlines() if ln.startswith(tag)]


def read_obj_vertices(path: Path) -> np.ndarray:
    """float64 [V, 3] positions of an OBJ's ``v`` lines."""
    values = np.array(b" ".join(_lines(path, b"v ")).split(), dtype=np.float64)
    return values.reshape(-1, 3)


def read_obj_topology(path: Path) -> dict:
    """Polygons of the neutral OBJ: faces/face_uv_index int32 [P, 4] (0-based, -1 pads a triangle), uv [T, 2],
    face_material int16 [P] into material_names (order of first use)."""
    faces, face_uv, material, names = [], [], [], []
    current = -1
    for ln in Path(path).read_bytes().splitlines():
        if ln.startswith(b"usemtl "):
            name = ln[7:].strip().decode()
            if name not in names:
                names.append(name)
            current = names.index(name)
        elif ln.startswith(b"f "):
            corners = [c.split(b"/") for c in ln[2:].split()]
            if not 3 <= len(corners) <= 4:
                raise RigFetchError(f"{path}: expected triangles or quads, received a {len(corners)}-gon")
            pad = [-1] * (4 - len(corners))
            faces.append([int(c[0]) - 1 for c in corners] + pad)
            face_uv.append([int(c[1]) - 1 if len(c) > 1 and c[1] else -1 for c in corners] + pad)
            material.append(current)
    uv = np.array(b" ".join(_lines(path, b"vt ")).split(), dtype=np.float64).reshape(-1, 2)
    return dict(faces=np.array(faces, dtype=np.int32), face_uv_index=np.array(face_uv, dtype=np.int32),
                uv=uv.astype(np.float32), face_material=np.array(material, dtype=np.int16),
                material_names=np.array(names))


# --- conversion ----------------------------------------------------------------------------------------------------
def _deltas(folder: Path, names: list[str], neutral: np.ndarray, progress: Optional[Progress], stage: str):
    out = np.empty((len(names), *neutral.shape), dtype=np.float16)
    for i, name in enumerate(names):
        path = folder / f"{name}.obj"
        if not path.is_file():
            raise RigFetchError(f"{path} is missing — the FaceXModel folder is incomplete; download it again with "
                                "`joker-head fetch-rig ict --force`")
        v = read_obj_vertices(path)
        if v.shape != neutral.shape:
            raise RigFetchError(f"{path}: expected {len(neutral)} vertices like the neutral mesh, received {len(v)}")
        out[i] = v - neutral
        if progress:
            progress(stage, (i + 1) / len(names))
    return out


def read_facexmodel(folder: Path, n_identity: int = 100, expressions: Optional[tuple[str, ...]] = None,
                    progress: Optional[Progress] = None) -> dict:
    """Original ``FaceXModel/`` folder -> the team-archive layout (cm, quads, float16 deltas; see shared.ict)."""
    folder = Path(folder)
    index_path = folder / "vertex_indices.json"
    if not index_path.is_file():
        raise RigFetchError(f"{index_path} is missing — point at ICT-FaceKit's FaceXModel folder")
    index = json.loads(index_path.read_text())
    names = list(expressions) if expressions is not None else list(index["expressions"])
    neutral = read_obj_vertices(folder / "generic_neutral_mesh.obj")
    raw = read_obj_topology(folder / "generic_neutral_mesh.obj")
    raw.update(
        neutral=neutral.astype(np.float32), expression_names=np.array(names),
        identity_deltas=_deltas(folder, [f"identity{i:03d}" for i in range(n_identity)], neutral, progress,
                                "identity"),
        expression_deltas=_deltas(folder, names, neutral, progress, "expressions"),
        landmarks_multipie68=np.array(index["idx_to_landmark_verts"], dtype=np.int32),
        source=np.array(f"ICT-VGL/ICT-FaceKit@{ict.COMMIT} FaceXModel; units cm; MIT License (c) 2020 USC "
                        "Institute for Creative Technologies"),
    )
    return raw


def convert_facexmodel(folder: Path, n_identity: int = 100, expressions: Optional[tuple[str, ...]] = None,
                       progress: Optional[Progress] = None) -> MorphableModel:
    """Original ``FaceXModel/`` folder -> rig (head frame, metres, normal-map region)."""
    return MorphableModel(ict.arrays_from_archive(read_facexmodel(folder, n_identity, expressions, progress)))


# --- fetch ---------------------------------------------------------------------------------------------------------
def _extract_facexmodel(zip_path: Path, into: Path) -> Path:
    """Extract ``*/FaceXModel/*`` and the top-level LICENSE of a GitHub archive zip; returns the FaceXModel dir."""
    out = into / "FaceXModel"
    out.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(zip_path) as z:
            for info in z.infolist():
                parts = info.filename.split("/")
                if info.is_dir() or any(p in ("", ".", "..") for p in parts[1:]):
                    continue
                if len(parts) == 3 and parts[1] == "FaceXModel":
                    target = out / parts[2]
                elif len(parts) == 2 and parts[1] == "LICENSE":
                    target = into / "LICENSE"
                else:
                    continue
                with z.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except zipfile.BadZipFile as e:
        zip_path.unlink(missing_ok=True)
        raise RigFetchError(f"{zip_path} is not a valid zip ({e}); it was deleted — run the command again") from e
    return out


def _verify(folder: Path, known: Mapping[str, str]) -> None:
    for name, expected in known.items():
        path = folder / name
        if not path.is_file():
            raise RigFetchError(f"the downloaded archive lacks FaceXModel/{name} — is the URL the pinned ICT-FaceKit "
                                f"commit {ict.COMMIT}?")
        got = sha256_file(path)
        if got != expected:
            raise RigFetchError(f"FaceXModel/{name}: expected sha256 {expected}, received {got} — the download is "
                                "corrupt or not the pinned commit; run `joker-head fetch-rig ict --force`")


def fetch_ict(dest_dir: Optional[Path] = None, source: ICTSource = ICTSource(), force: bool = False,
              keep_download: bool = False, progress: Optional[Progress] = None) -> Path:
    """Download the pinned ICT-FaceKit zip, verify it, convert it and cache ``<dest_dir>/ict.npz`` (plus the MIT
    notice as ``ict.LICENSE.txt``). Returns the rig path; an existing rig is kept unless ``force``."""
    dest_dir = Path(dest_dir) if dest_dir is not None else rigs_dir()
    rig_path = dest_dir / "ict.npz"
    if rig_path.is_file() and not force:
        return rig_path
    zip_path = dest_dir / "downloads" / f"ICT-FaceKit-{ict.COMMIT}.zip"
    if force:
        zip_path.unlink(missing_ok=True)
    download(source.url, zip_path, progress=(lambda done, total: progress("download", done / total if total else 0))
             if progress else None)
    with tempfile.TemporaryDirectory(dir=dest_dir, prefix="ict-") as tmp:
        folder = _extract_facexmodel(zip_path, Path(tmp))
        _verify(folder, source.known_sha256)
        model = convert_facexmodel(folder, source.n_identity, source.expressions, progress)
        model.save(rig_path)
    (dest_dir / "ict.LICENSE.txt").write_text(ict.LICENSE)
    if not keep_download:
        zip_path.unlink(missing_ok=True)
    return rig_path

"""Morphable head models: one file format and its evaluation (numpy only, no pickles).

A model is a linear 3DMM with named expression blendshapes, evaluated in the head frame of
:mod:`shared.conventions` (metres, +x subject's left, +y up, +z out of the face, origin at the centroid of the
normal-map region of the neutral shape)::

    S = S̄ + Σ_i α_i · B_id[i] + Σ_j β_j · B_exp[j]          # [V, 3], Deep3DFaceRecon's S = S̄ + B_id α + B_exp β
    eyes rotate rigidly about their sclera centres by the gaze angles
    S_posed = S · Rᵀ,  R = euler_to_matrix(pitch, yaw, roll)  # about the head-frame origin, as Deep3DFaceRecon

File format (``.npz`` written with :meth:`MorphableModel.save`, read with ``allow_pickle=False``):

    kind                 "joker-head-morphable";  format_version  1
    name, source, license, coefficient_layout      str (the licence text travels with the data)
    neutral              float32 [V, 3]  head frame, metres
    identity_basis       float16|32 [I, V, 3]; expression_basis float16|32 [E, V, 3]; both times basis_unit_m
    expression_names     str [E]
    faces                int32 [F, 3]  every triangle of the mesh, counter-clockwise seen from outside
    normal_region_faces  int32 [F', 3] the surface normal maps show (may add faces, e.g. a lip membrane)
    region_names str [R], vertex_region int8 [V] (-1 = none)
    eye_rotating_L/R, eye_pivot_L/R   int32 index lists: vertices the gaze turns / sclera vertices (pivot fit)
    optional: uv float32 [T, 2], face_uv int32 [F, 3], face_material int16 [F], material_names str [M],
              landmarks68 int32 [68], vertex_albedo float32 [V, 3] in 0..1

The team's ICT-FaceKit archive (``ict_facekit_f16.npz``: centimetres, quads) is also accepted by :meth:`load`,
converted on the fly by :mod:`shared.ict`.
"""

from __future__ import annotations

import difflib
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from .conventions import euler_to_matrix
from .errors import JokerError
from .ict import arrays_from_archive
from .paths import rigs_dir
from .rigformat import FORMAT_KIND, FORMAT_VERSION
from .spec import SpecError

RIG_ENV = "JOKER_HEAD_RIG"  # path of a converted rig that overrides the default search
_REQUIRED = ("neutral", "identity_basis", "expression_basis", "basis_unit_m", "expression_names", "faces",
             "normal_region_faces", "region_names", "vertex_region")
_OPTIONAL = ("uv", "face_uv", "face_material", "material_names", "landmarks68", "vertex_albedo",
             "eye_rotating_L", "eye_rotating_R", "eye_pivot_L", "eye_pivot_R")


class RigNotFound(JokerError, FileNotFoundError):
    """No converted rig where we looked; the message says where and which command fetches it."""


def vertex_normals(vertices: np.ndarray, faces: np.ndarray, area_weighted: bool = False) -> np.ndarray:
    """Unit vertex normals float32 [V, 3]: the normalised sum of the adjacent faces' *unit* normals.

    This is Deep3DFaceRecon's ``compute_norm`` (unit face normals from cross(v1 - v2, v2 - v3), summed over
    ``point_buf``), so BFM normal maps match the prior's training data. Vertices no face uses get (0, 0, 0).
    ``area_weighted`` weighs each face by its area instead, for shading irregular meshes (the exported surface, the
    oracle head); then no normal is zero: a vertex whose faces cancel takes the mean of their unit normals, else
    the direction from the centroid, else +Y. vertices: [V, 3]; faces: int [F, 3], counter-clockwise seen from outside.
    The one numpy implementation; ``backend.render.normals.vertex_normals`` is its batched torch twin.
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[faces]  # [F, 3, 3]
    n_face = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length = 2 * area
    if not area_weighted:
        n_face /= np.maximum(np.linalg.norm(n_face, axis=1, keepdims=True), 1e-20)
    idx = faces.reshape(-1)
    n_corner = np.repeat(n_face, 3, axis=0)  # [3F, 3], corner order matches faces.reshape(-1)
    n = np.stack([np.bincount(idx, n_corner[:, k], minlength=len(v)) for k in range(3)], axis=1)
    if area_weighted:  # shading (glTF needs unit normals everywhere): no vertex may keep a zero normal
        length = np.linalg.norm(n, axis=1)
        bad = length <= 1e-12 * max(float(length.max(initial=0.0)), 1e-30)
        if bad.any():  # faces that cancel or have no area (a decimation needle), or a vertex no face uses
            unit = n_face / np.maximum(np.linalg.norm(n_face, axis=1, keepdims=True), 1e-30)
            alt = np.stack([np.bincount(idx, np.repeat(unit[:, k], 3), minlength=len(v)) for k in range(3)], axis=1)
            alt = np.where(np.linalg.norm(alt, axis=1, keepdims=True) > 1e-6, alt, v - v.mean(axis=0))
            alt = np.where(np.linalg.norm(alt, axis=1, keepdims=True) > 1e-12, alt, np.array([0.0, 1.0, 0.0]))
            n[bad] = alt[bad]
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return n.astype(np.float32)


def _sphere_centre(points: np.ndarray) -> np.ndarray:
    """Least-squares sphere centre float64 [3] of points [P, 3] (|p|² = 2 p·c + (r² − |c|²))."""
    A = np.concatenate([2.0 * points, np.ones((len(points), 1))], axis=1)
    b = (points ** 2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(A, b, rcond=None)
    return sol[:3]


class MorphableModel:
    """A linear morphable head model in the head frame (metres). Build with :meth:`load` or the constructor.

    Attributes (read-only by convention):
        neutral            float32 [V, 3]      S̄, head frame
        identity_basis     float32 [I, V, 3]   B_id, one standard deviation per mode (a view into the bases)
        expression_basis   float32 [E, V, 3]   B_exp, the shape at weight 1 minus the neutral
        expression_names   list[str] [E]
        faces              int32 [F, 3];  normal_region_faces int32 [F', 3]
        region_names       list[str];     vertex_region int8 [V]
        arrays             dict of every stored array (uv, face_uv, face_material, landmarks68, ...)
    """

    def __init__(self, arrays: Mapping[str, np.ndarray]):
        missing = [k for k in _REQUIRED if k not in arrays]
        if missing:
            raise SpecError("rig file", f"arrays {', '.join(_REQUIRED)}", f"missing {', '.join(missing)}",
                            "convert the rig again with `joker-head fetch-rig` / `joker-head import-rig`")
        self.arrays = dict(arrays)
        self.name = str(arrays.get("name", "rig"))
        self.license = str(arrays.get("license", ""))
        self.source = str(arrays.get("source", ""))
        self.neutral = np.ascontiguousarray(arrays["neutral"], dtype=np.float32)
        V = len(self.neutral)
        unit = float(arrays["basis_unit_m"])
        id_b, exp_b = arrays["identity_basis"], arrays["expression_basis"]
        # One float32 matrix [I + E, 3V] so a shape is a single small matmul (~5 ms for ICT).
        self._B = np.empty((len(id_b) + len(exp_b), V * 3), dtype=np.float32)
        self._B[: len(id_b)] = np.asarray(id_b).reshape(len(id_b), -1)
        self._B[len(id_b):] = np.asarray(exp_b).reshape(len(exp_b), -1)
        self._B *= np.float32(unit)
        self.n_identity = len(id_b)
        self.identity_basis = self._B[: self.n_identity].reshape(-1, V, 3)
        self.expression_basis = self._B[self.n_identity:].reshape(-1, V, 3)
        self.expression_names = [str(s) for s in arrays["expression_names"]]
        self._exp_index = {n: i for i, n in enumerate(self.expression_names)}
        self.faces = np.ascontiguousarray(arrays["faces"], dtype=np.int32)
        self.normal_region_faces = np.ascontiguousarray(arrays["normal_region_faces"], dtype=np.int32)
        self.region_names = [str(s) for s in arrays["region_names"]]
        self.vertex_region = np.asarray(arrays["vertex_region"], dtype=np.int8)
        self._eyes = [(np.asarray(arrays[f"eye_rotating_{s}"]), np.asarray(arrays[f"eye_pivot_{s}"]))
                      for s in ("L", "R") if f"eye_rotating_{s}" in arrays]

    # --- io ---------------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> "MorphableModel":
        """Read a rig ``.npz`` (this format, or the team's ICT-FaceKit archive). Never unpickles."""
        path = Path(path)
        if not path.is_file():
            raise RigNotFound(f"rig file {path} does not exist — run `joker-head fetch-rig ict` or pass a converted "
                              "rig (.npz)")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if "kind" not in arrays and "identity_deltas" in arrays:  # the team's ICT archive
            arrays = arrays_from_archive(arrays)
        elif str(arrays.get("kind", "")) != FORMAT_KIND:
            raise SpecError("rig file", f"a {FORMAT_KIND} .npz", f"{path.name} with arrays {sorted(arrays)[:6]}",
                            "convert the rig with `joker-head fetch-rig ict` or `joker-head import-rig bfm`")
        elif int(arrays.get("format_version", 0)) > FORMAT_VERSION:
            raise SpecError("rig file format_version", f"<= {FORMAT_VERSION}", int(arrays["format_version"]),
                            "update joker-head to read this rig")
        return cls(arrays)

    def save(self, path: str | os.PathLike, compress: bool = True) -> Path:
        """Write this model as a rig ``.npz`` (bases keep their stored dtype and unit)."""
        out = {k: v for k, v in self.arrays.items()}
        out.update(kind=np.array(FORMAT_KIND), format_version=np.array(FORMAT_VERSION),
                   name=np.array(self.name), license=np.array(self.license), source=np.array(self.source))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        (np.savez_compressed if compress else np.savez)(tmp, **out)
        os.replace(tmp, path)
        return path

    # --- evaluation -------------------------------------------------------------------------------------------
    @property
    def n_vertices(self) -> int:
        return len(self.neutral)

    def expression_weights(self, expressions: Optional[Mapping[str, float]]) -> np.ndarray:
        """float32 [E] weights from a name -> weight dict; unknown names raise SpecError with suggestions."""
        w = np.zeros(len(self.expression_names), dtype=np.float32)
        for name, value in (expressions or {}).items():
            i = self._exp_index.get(name)
            if i is None:
                close = difflib.get_close_matches(str(name), self.expression_names, n=3)
                raise SpecError(f"expressions.{name}", f"an expression of rig '{self.name}'", name,
                                f"did you mean {', '.join(close)}?" if close else
                                f"known: {', '.join(self.expression_names[:8])}, ...")
            if not np.isfinite(value):
                raise SpecError(f"expressions.{name}", "a finite number", value, "use a weight such as 0..1")
            w[i] = value
        return w

    def _identity_weights(self, identity: Optional[Sequence[float]]) -> np.ndarray:
        a = np.zeros(self.n_identity, dtype=np.float32)
        if identity is None:
            return a
        ident = np.asarray(identity, dtype=np.float32).reshape(-1)
        if len(ident) > self.n_identity or not np.isfinite(ident).all():
            raise SpecError("identity", f"at most {self.n_identity} finite weights", f"{len(ident)} values",
                            "pass one weight per identity mode (missing trailing modes count as 0)")
        a[: len(ident)] = ident
        return a

    def shape(self, identity: Optional[Sequence[float]] = None,
              expressions: Optional[Mapping[str, float]] = None) -> np.ndarray:
        """S̄ + B_id α + B_exp β: float32 [V, 3], unposed, head frame (metres)."""
        w = np.concatenate([self._identity_weights(identity), self.expression_weights(expressions)])
        nz = np.flatnonzero(w)
        if len(nz) * 4 > len(w):  # dense weights: one gemv, no copy of the bases
            offset = w @ self._B
        else:  # a few sliders: touch only their rows
            offset = w[nz] @ self._B[nz] if len(nz) else 0.0
        flat = self.neutral.reshape(-1) + offset
        return flat.reshape(-1, 3).astype(np.float32, copy=False)

    def evaluate(self, identity: Optional[Sequence[float]] = None,
                 expressions: Optional[Mapping[str, float]] = None,
                 pose: Sequence[float] = (0.0, 0.0, 0.0), gaze: Sequence[float] = (0.0, 0.0)) -> np.ndarray:
        """Posed vertices float32 [V, 3] in the head frame (metres).

        identity:    α, up to ``n_identity`` weights in standard deviations (missing trailing modes = 0).
        expressions: β by name, e.g. {"jawOpen": 0.6}; names in ``expression_names``.
        pose:        (pitch, yaw, roll) radians, R = Rz·Ry·Rx about the origin (positive pitch: face down,
                     positive yaw: face toward image right / the subject's left) — shared.conventions.
        gaze:        (yaw, pitch) radians of both eyeballs about their centres, same sense as the pose angles
                     (positive yaw looks toward the subject's left, positive pitch looks down).
        """
        S = self.shape(identity, expressions)
        if any(gaze) and self._eyes:
            R_eye = euler_to_matrix(float(gaze[1]), float(gaze[0]), 0.0)
            for rotating, pivot in self._eyes:
                c = _sphere_centre(S[pivot].astype(np.float64))
                S[rotating] = ((S[rotating] - c) @ R_eye.T + c).astype(np.float32)
        if any(pose):
            S = (S @ euler_to_matrix(*map(float, pose)).T.astype(np.float32)).astype(np.float32)
        return S

    def vertex_normals(self, vertices: np.ndarray, faces: Optional[np.ndarray] = None) -> np.ndarray:
        """float32 [V, 3] unit vertex normals of ``vertices`` over ``faces`` (default: all faces)."""
        return vertex_normals(vertices, self.faces if faces is None else faces)

    def region_mask(self, *names: str) -> np.ndarray:
        """bool [V]: vertices in any of the named regions."""
        unknown = [n for n in names if n not in self.region_names]
        if unknown:
            raise SpecError("region", f"one of {', '.join(self.region_names)}", ", ".join(unknown))
        ids = [self.region_names.index(n) for n in names]
        return np.isin(self.vertex_region, ids)


# --- finding the default rig ---------------------------------------------------------------------------------------
def default_rig_candidates(name: str = "ict") -> list[Path]:
    """Where :func:`find_default_rig` looks, in order: $JOKER_HEAD_RIG, the user data dir, the team folder."""
    found = [Path(os.environ[RIG_ENV]).expanduser()] if os.environ.get(RIG_ENV) else []
    found.append(rigs_dir() / f"{name}.npz")
    if name == "ict":  # development: the team's converted archive beside the checkout (../shared)
        team = os.environ.get("JOKER_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared"
        found.append(Path(team) / "models" / "ict-facekit" / "ict_facekit_f16.npz")
    return found


def find_default_rig(name: str = "ict") -> Path:
    """Path of the default rig, or :class:`RigNotFound` naming the places searched and the fetch command."""
    candidates = default_rig_candidates(name)
    for path in candidates:
        if path.is_file():
            return path
    fetch = "joker-head fetch-rig ict" if name == "ict" else f"joker-head import-rig {name} ..."
    raise RigNotFound(f"no '{name}' rig found (looked at: {', '.join(map(str, candidates))}) — run `{fetch}` on a "
                      f"machine with internet, or set {RIG_ENV} to a converted rig .npz")


_LOADED: "OrderedDict[tuple[str, int, int], MorphableModel]" = OrderedDict()
_LOADED_LOCK = threading.Lock()
KEEP_LOADED_RIGS = 2  # ~25 MiB each for ICT; a job asks for its rig up to three times (views, oracle, completion)


def load_default_rig(name: str = "ict") -> MorphableModel:
    """The default rig called ``name``, loaded once per file version (path, size, mtime) and shared by every caller
    in the process: treat it as read-only (as :class:`MorphableModel`'s attributes already are by convention)."""
    path = find_default_rig(name)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _LOADED_LOCK:  # the server's device workers load from their own threads
        model = _LOADED.get(key)
        if model is None:
            model = _LOADED[key] = MorphableModel.load(path)
            while len(_LOADED) > KEEP_LOADED_RIGS:
                _LOADED.popitem(last=False)
        _LOADED.move_to_end(key)
        return model

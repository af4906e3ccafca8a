"""BFM 2009 front-face model, built from the user's own files exactly as Deep3DFaceRecon's ``transferBFM09``.

Inputs (never bundled: the Basel Face Model is licensed for non-commercial research only):
    01_MorphableModel.mat   BFM 2009: shapeMU [3N0, 1], shapePC [3N0, 199], shapeEV [199, 1] (µm), texMU (0..255)
    Exp_Pca.bin             Guo et al.: int32 K, float32 mean [3N1] (unused), float32 PCs [K, 3N1] PC-major
    std_exp.txt             K standard deviations of the expression PCs
    BFM_exp_idx.mat         trimIndex [N1] (1-based into N0)
    BFM_front_idx.mat       idx [N2] (1-based into N1)
    facemodel_info.mat      tri [F, 3] (1-based into N2), keypoints [68] (1-based)
or Deep3DFaceRecon's already converted ``BFM_model_front.mat`` (meanshape, idBase, exBase, meantex, tri, keypoints).

Result (N2 = 35,709 for the real files): S = S̄ + B_id α + B_exp β with α = coeffs[0:80], β = coeffs[80:144] of
Deep3DFaceRecon's 257 coefficients; S̄ recentred on its own vertex centroid (``recenter=True``); bases scaled
from decimetres to metres, so a coefficient vector gives the same shape as Deep3DFaceRecon, in metres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from shared.morphable import MorphableModel
from shared.rigformat import FORMAT_KIND, FORMAT_VERSION
from shared.spec import SpecError

DM = 0.1  # Deep3DFaceRecon's unit (µm / 1e5) in metres
N_ID, N_EXP = 80, 64
COEFF_SLICES = {"id": slice(0, 80), "exp": slice(80, 144), "tex": slice(144, 224), "angle": slice(224, 227),
                "gamma": slice(227, 254), "trans": slice(254, 257)}
NOTICE = ("Basel Face Model 2009 (University of Basel), front-face subset as built by Deep3DFaceRecon, with the "
          "expression basis of Guo et al. (Exp_Pca.bin). The BFM is licensed for NON-COMMERCIAL scientific research "
          "only, under the agreement you accepted to obtain it. joker-head never bundles or distributes it: this "
          "converted file is for your own use — do not share it or use it commercially.")


def _loadmat(path: Path, keys: tuple[str, ...]) -> dict:
    from scipy.io import loadmat  # backend-only dependency

    path = Path(path)
    if not path.is_file():
        raise SpecError(str(path), "an existing .mat file", "missing file", "check the path of your BFM files")
    data = loadmat(str(path))
    missing = [k for k in keys if k not in data]
    if missing:
        raise SpecError(str(path), f"a .mat with {', '.join(keys)}", f"keys {sorted(k for k in data if k[0] != '_')}",
                        "is this the right BFM / Deep3DFaceRecon file?")
    return data


def load_exp_pca(path: Path) -> np.ndarray:
    """Exp_Pca.bin -> PCs float64 [3 * N1, K] (columns are PCs, xyz interleaved per vertex), like LoadExpBasis."""
    raw = Path(path).read_bytes()
    K = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    floats = np.frombuffer(raw[4:], dtype="<f4")
    if K <= 0 or len(floats) % (K + 1) != 0:
        raise SpecError(str(path), "int32 K, then float32 mean [3N] and PCs [K, 3N]",
                        f"K={K} and {len(floats)} floats", "is this Guo et al.'s Exp_Pca.bin?")
    n3 = len(floats) // (K + 1)
    return floats[n3:].reshape(K, n3).T.astype(np.float64)


def transfer_bfm09(model_mat: Path, exp_bin: Path, std_exp: Path, exp_idx_mat: Path, front_idx_mat: Path,
                   info_mat: Path) -> dict:
    """Deep3DFaceRecon's transferBFM09 in numpy: the ``BFM_model_front.mat`` arrays (decimetres, 1-based tri)."""
    bfm = _loadmat(model_mat, ("shapeMU", "shapePC", "shapeEV", "texMU"))
    ex_pc = load_exp_pca(exp_bin)
    ex_ev = np.loadtxt(std_exp).reshape(-1)
    trim = _loadmat(exp_idx_mat, ("trimIndex",))["trimIndex"].astype(np.int64).reshape(-1) - 1
    front = _loadmat(front_idx_mat, ("idx",))["idx"].astype(np.int64).reshape(-1) - 1
    info = _loadmat(info_mat, ("tri", "keypoints"))
    id_base = (bfm["shapePC"] * bfm["shapeEV"].reshape(1, -1) / 1e5)[:, :N_ID]
    ex_base = (ex_pc * ex_ev[: ex_pc.shape[1]].reshape(1, -1) / 1e5)[:, :N_EXP]
    rows = lambda v: (3 * v[:, None] + np.arange(3)).reshape(-1)  # noqa: E731 — vertex ids -> xyz rows
    sel = trim[front]
    return dict(meanshape=bfm["shapeMU"].reshape(-1)[rows(sel)] / 1e5, idBase=id_base[rows(sel)],
                exBase=ex_base[rows(front)], meantex=np.asarray(bfm["texMU"]).reshape(-1)[rows(sel)],
                tri=info["tri"], keypoints=info["keypoints"])


def model_from_front(front: dict) -> MorphableModel:
    """``BFM_model_front.mat`` arrays -> rig (head frame = Deep3DFaceRecon's recentred frame, metres)."""
    mean = np.asarray(front["meanshape"], dtype=np.float64).reshape(-1, 3)
    mean -= mean.mean(axis=0)  # ParametricFaceModel(recenter=True)
    N = len(mean)
    basis = lambda b: (np.asarray(b, np.float64).reshape(N, 3, -1).transpose(2, 0, 1) * DM).astype(np.float32)  # noqa
    faces = np.asarray(front["tri"], dtype=np.int64) - 1
    if faces.min() < 0 or faces.max() >= N:
        raise SpecError("tri", f"1-based vertex indices in [1, {N}]", f"[{faces.min() + 1}, {faces.max() + 1}]",
                        "facemodel_info.mat must match BFM_front_idx.mat")
    arrays = dict(
        kind=np.array(FORMAT_KIND), format_version=np.array(FORMAT_VERSION), name=np.array("bfm2009-front"),
        source=np.array("BFM 2009 + Exp_Pca (Guo et al.), front face as Deep3DFaceRecon (BFM_model_front)"),
        license=np.array(NOTICE),
        coefficient_layout=np.array("Deep3DFaceRecon: identity = coeffs[0:80], expressions exp00..exp63 = "
                                    "coeffs[80:144], pose (pitch, yaw, roll) = coeffs[224:227]"),
        neutral=(mean * DM).astype(np.float32), basis_unit_m=np.array(1.0),
        identity_basis=basis(front["idBase"]), expression_basis=basis(front["exBase"]),
        expression_names=np.array([f"exp{i:02d}" for i in range(np.asarray(front["exBase"]).shape[1])]),
        faces=faces.astype(np.int32), normal_region_faces=faces.astype(np.int32),
        region_names=np.array(["face"]), vertex_region=np.zeros(N, dtype=np.int8),
        landmarks68=(np.asarray(front["keypoints"], dtype=np.int64).reshape(-1) - 1).astype(np.int32),
        vertex_albedo=(np.asarray(front["meantex"], np.float64).reshape(N, 3) / 255.0).astype(np.float32),
    )
    return MorphableModel(arrays)


def import_bfm(model_mat: Optional[Path] = None, exp_bin: Optional[Path] = None, bfm_dir: Optional[Path] = None,
               std_exp: Optional[Path] = None, exp_idx: Optional[Path] = None, front_idx: Optional[Path] = None,
               info: Optional[Path] = None, front_model: Optional[Path] = None) -> MorphableModel:
    """Build the BFM rig from the original files (helper files default to ``bfm_dir``, else the folder of
    ``model_mat``, as in Deep3DFaceRecon's ``BFM/``) or from a ready ``BFM_model_front.mat``."""
    if front_model is not None:
        return model_from_front(_loadmat(front_model, ("meanshape", "idBase", "exBase", "meantex", "tri",
                                                       "keypoints")))
    if model_mat is None or exp_bin is None:
        raise SpecError("import-rig bfm", "--model 01_MorphableModel.mat and --expressions Exp_Pca.bin, or "
                        "--front-model BFM_model_front.mat", "neither", "pass the BFM files you downloaded")
    folder = Path(bfm_dir) if bfm_dir is not None else Path(model_mat).parent
    return model_from_front(transfer_bfm09(
        model_mat, exp_bin, std_exp or folder / "std_exp.txt", exp_idx or folder / "BFM_exp_idx.mat",
        front_idx or folder / "BFM_front_idx.mat", info or folder / "facemodel_info.mat"))


def params_from_coefficients(coeffs: np.ndarray) -> dict:
    """Deep3DFaceRecon's 257 coefficients -> evaluate() arguments (identity, expressions, pose) of the BFM rig."""
    c = np.asarray(coeffs, dtype=np.float64).reshape(-1)
    if c.shape != (257,):
        raise SpecError("coefficients", "257 values (id, exp, tex, angle, gamma, trans)", f"{c.shape[0]} values")
    exp = c[COEFF_SLICES["exp"]]
    return dict(identity=c[COEFF_SLICES["id"]], expressions={f"exp{i:02d}": float(v) for i, v in enumerate(exp)},
                pose=tuple(float(a) for a in c[COEFF_SLICES["angle"]]))

"""Rig converters: ICT from the original FaceXModel layout, `fetch-rig ict` against a loopback HTTP server, and
`import-rig bfm` on small synthetic files in BFM's real formats."""

from __future__ import annotations

import functools
import http.server
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backend.cli import main
from backend.download import sha256_file
from backend.rigs import bfm as bfm_mod
from backend.rigs.ict import KNOWN_SHA256, ICTSource, RigFetchError, fetch_ict, read_facexmodel
from shared import ict
from shared.morphable import MorphableModel
from tests.support import ICT_SUBSET

SUBSET_EXPR = ("jawOpen", "mouthSmile_L")


@pytest.fixture(scope="module")
def subset(ict_npz) -> Path:
    return ICT_SUBSET


def test_pinned_hashes_are_the_subset_files(subset):
    for name, digest in KNOWN_SHA256.items():
        assert sha256_file(subset / name) == digest, name


def test_facexmodel_converter_matches_the_team_archive(subset, ict_npz):
    raw = read_facexmodel(subset, n_identity=1, expressions=SUBSET_EXPR)
    with np.load(ict_npz) as team:
        for key in ("neutral", "faces", "face_uv_index", "uv", "face_material", "landmarks_multipie68"):
            assert np.array_equal(raw[key], team[key]), key
        names = list(team["expression_names"])
        assert np.array_equal(raw["identity_deltas"][0], team["identity_deltas"][0])
        for i, name in enumerate(SUBSET_EXPR):
            assert np.array_equal(raw["expression_deltas"][i], team["expression_deltas"][names.index(name)])


# --- fetch-rig against a loopback server ---------------------------------------------------------------------------
def github_zip(subset: Path, tamper: str | None = None) -> bytes:
    """A zip laid out like GitHub's archive of the pinned commit, holding the subset files and the LICENSE."""
    top = f"ICT-FaceKit-{ict.COMMIT}"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr(f"{top}/README.md", "ICT-FaceKit")
        z.writestr(f"{top}/LICENSE", (subset.parent / "LICENSE").read_text())
        for path in sorted(subset.iterdir()):
            data = path.read_bytes()
            if path.name == tamper:
                data = data.replace(b"v ", b"v  ", 1)
            z.writestr(f"{top}/FaceXModel/{path.name}", data)
        z.writestr(f"{top}/FaceXModel/../../evil.txt", "zip-slip")  # must be ignored
    return buf.getvalue()


@pytest.fixture()
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_fetch_converts_and_caches(subset, server, tmp_path):
    root, base = server
    (root / "ict.zip").write_bytes(github_zip(subset))
    source = ICTSource(url=f"{base}/ict.zip", n_identity=1, expressions=SUBSET_EXPR)
    dest = tmp_path / "rigs"
    path = fetch_ict(dest, source)
    rig = MorphableModel.load(path)
    assert rig.expression_names == list(SUBSET_EXPR) and rig.n_identity == 1
    assert "MIT License" in rig.license and "MIT License" in (dest / "ict.LICENSE.txt").read_text()
    obj = np.array([ln.split()[1:4] for ln in (subset / "jawOpen.obj").read_text().splitlines()
                    if ln.startswith("v ")], dtype=np.float64) * 0.01 - rig.arrays["origin_in_source_units"] * 0.01
    assert np.abs(rig.evaluate(expressions={"jawOpen": 1.0}) - obj).max() <= 2e-5
    assert not (dest / "downloads" / f"ICT-FaceKit-{ict.COMMIT}.zip").exists()  # zip removed after converting
    assert not list(tmp_path.rglob("evil.txt"))
    (root / "ict.zip").unlink()  # cached: no network needed the second time
    assert fetch_ict(dest, source) == path


def test_fetch_rejects_a_tampered_file(subset, server, tmp_path):
    root, base = server
    (root / "ict.zip").write_bytes(github_zip(subset, tamper="jawOpen.obj"))
    with pytest.raises(RigFetchError, match="jawOpen.obj: expected sha256"):
        fetch_ict(tmp_path / "rigs", ICTSource(url=f"{base}/ict.zip", n_identity=1, expressions=SUBSET_EXPR))
    assert not (tmp_path / "rigs" / "ict.npz").exists()


def test_fetch_cli_reports_an_incomplete_archive(subset, server, tmp_path, capsys):
    root, base = server
    (root / "ict.zip").write_bytes(github_zip(subset))  # the full model needs identity001..099 and 51 more shapes
    rc = main(["fetch-rig", "ict", "--url", f"{base}/ict.zip", "--dest", str(tmp_path / "rigs")])
    assert rc == 1
    assert "identity001.obj is missing" in capsys.readouterr().err


def test_fetch_cli_reports_http_errors(server, tmp_path, capsys):
    _, base = server
    assert main(["fetch-rig", "ict", "--url", f"{base}/nothing.zip", "--dest", str(tmp_path / "r")]) == 1
    assert "HTTP 404" in capsys.readouterr().err


# --- BFM on synthetic files ----------------------------------------------------------------------------------------
N0, N1, N2, K_ID, K_EXP = 40, 30, 20, 199, 79


@pytest.fixture()
def bfm_files(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    d = tmp_path / "BFM"
    d.mkdir()
    shape_mu = rng.normal(scale=5e4, size=(3 * N0, 1)) + 1e4  # µm
    shape_pc, shape_ev = rng.normal(size=(3 * N0, K_ID)), rng.uniform(1e3, 1e4, size=(K_ID, 1))
    tex_mu = rng.uniform(0, 255, size=(3 * N0, 1))
    savemat(d / "01_MorphableModel.mat", dict(shapeMU=shape_mu, shapePC=shape_pc, shapeEV=shape_ev, texMU=tex_mu,
                                              texPC=rng.normal(size=(3 * N0, K_ID)), texEV=np.ones((K_ID, 1))))
    exp_pc = rng.normal(size=(K_EXP, 3 * N1)).astype(np.float32)  # PC-major, as in the file
    with open(d / "Exp_Pca.bin", "wb") as f:
        np.array([K_EXP], dtype="<i4").tofile(f)
        rng.normal(size=3 * N1).astype("<f4").tofile(f)
        exp_pc.astype("<f4").tofile(f)
    exp_ev = rng.uniform(1e3, 1e4, size=K_EXP)
    np.savetxt(d / "std_exp.txt", exp_ev)
    trim = rng.choice(N0, N1, replace=False) + 1
    front = rng.choice(N1, N2, replace=False) + 1
    savemat(d / "BFM_exp_idx.mat", dict(trimIndex=trim.reshape(-1, 1).astype(np.float64)))
    savemat(d / "BFM_front_idx.mat", dict(idx=front.reshape(-1, 1).astype(np.int32)))
    tri = np.array([[i, i + 1, i + 2] for i in range(1, N2 - 1)], dtype=np.float64)
    savemat(d / "facemodel_info.mat", dict(tri=tri, keypoints=np.arange(1, 69, dtype=np.float64) % N2 + 1,
                                           point_buf=np.ones((N2, 8))))
    # Deep3DFaceRecon's formulas, written out independently: rows of vertex v are 3v, 3v+1, 3v+2.
    sel = trim[front - 1] - 1
    rows = lambda v: (3 * v[:, None] + np.arange(3)).reshape(-1)  # noqa: E731
    truth = dict(mean=shape_mu[rows(sel), 0] / 1e5, id=(shape_pc * shape_ev.T / 1e5)[rows(sel), :80],
                 exp=(exp_pc.T.astype(np.float64) * exp_ev / 1e5)[rows(front - 1), :64], tri=tri)
    return d, truth


def deep3d_shape(truth, alpha, beta):
    """S = recentred mean + idBase α + exBase β in decimetres, [N, 3]."""
    mean = truth["mean"].reshape(-1, 3)
    mean = mean - mean.mean(axis=0)
    return mean + (truth["id"] @ alpha + truth["exp"] @ beta).reshape(-1, 3)


def test_import_bfm_matches_deep3dfacerecon(bfm_files, tmp_path, capsys):
    d, truth = bfm_files
    out = tmp_path / "bfm.npz"
    rc = main(["import-rig", "bfm", "--model", str(d / "01_MorphableModel.mat"), "--expressions",
               str(d / "Exp_Pca.bin"), "--output", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "NON-COMMERCIAL" in captured.err and "never bundles" in captured.err
    rig = MorphableModel.load(out)
    assert rig.n_vertices == N2 and rig.n_identity == 80 and len(rig.expression_names) == 64
    assert np.array_equal(rig.faces, truth["tri"].astype(np.int32) - 1)
    assert "NON-COMMERCIAL" in rig.license
    rng = np.random.default_rng(1)
    coeffs = rng.normal(size=257)
    got = rig.evaluate(**{k: v for k, v in bfm_mod.params_from_coefficients(coeffs).items() if k != "pose"})
    expected_m = deep3d_shape(truth, coeffs[:80], coeffs[80:144]) * 0.1
    assert np.abs(got - expected_m).max() < 1e-6
    assert np.abs(rig.neutral.mean(axis=0)).max() < 1e-7  # recentred like recenter=True


def test_import_bfm_front_model_gives_the_same_rig(bfm_files, tmp_path):
    from scipy.io import savemat

    d, truth = bfm_files
    front = bfm_mod.transfer_bfm09(d / "01_MorphableModel.mat", d / "Exp_Pca.bin", d / "std_exp.txt",
                                   d / "BFM_exp_idx.mat", d / "BFM_front_idx.mat", d / "facemodel_info.mat")
    savemat(tmp_path / "BFM_model_front.mat", {k: np.atleast_2d(v) if np.ndim(v) == 1 else v
                                                for k, v in front.items()})
    a = bfm_mod.import_bfm(front_model=tmp_path / "BFM_model_front.mat")
    b = bfm_mod.import_bfm(d / "01_MorphableModel.mat", d / "Exp_Pca.bin")
    assert np.allclose(a.evaluate(identity=np.ones(80)), b.evaluate(identity=np.ones(80)), atol=1e-7)


def test_import_bfm_errors_name_the_file(bfm_files, tmp_path, capsys):
    d, _ = bfm_files
    (d / "Exp_Pca.bin").write_bytes(np.array([5], "<i4").tobytes() + b"\0" * 12)
    rc = main(["import-rig", "bfm", "--model", str(d / "01_MorphableModel.mat"), "--expressions",
               str(d / "Exp_Pca.bin"), "--output", str(tmp_path / "x.npz")])
    assert rc == 1 and "Exp_Pca.bin" in capsys.readouterr().err
    assert main(["import-rig", "bfm", "--output", str(tmp_path / "x.npz")]) == 1

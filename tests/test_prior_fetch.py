"""`joker-head fetch-models` against a loopback HTTP server that behaves like the hub (LFS sha256 in X-Linked-Etag
on a redirecting resolve URL, Range requests) and the authors' share (a zip) — never the internet."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile

import pytest

from backend.cli import main as cli_main
from backend.download import DownloadError
from backend.prior import layout
from backend.prior.fetch import fetch_models


class Hub:
    """Files by URL path; .safetensors files act as LFS objects (HEAD -> 302 with X-Linked-Etag)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.announced: dict[str, str] = {}  # path -> sha256 to announce (defaults to the real one)
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range)
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path, self.headers.get("Range", "")))
                body = hub.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                lfs = self.path.endswith((".safetensors", ".bin"))
                self.send_response(302 if lfs else 200)
                if lfs:
                    self.send_header("X-Linked-Etag", f'"{hub.announced.get(self.path, hashlib.sha256(body).hexdigest())}"')
                    self.send_header("Location", "/cdn" + self.path)
                self.send_header("ETag", '"0123456789abcdef0123456789abcdef01234567"')  # git blob sha1
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                rng = self.headers.get("Range", "")
                hub.requests.append(("GET", self.path, rng))
                body = hub.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng[len("bytes="):].split("-")[0]) if rng.startswith("bytes=") else 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                self.wfile.write(body[start:])

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add_mode(self, mode: str) -> None:
        for f in layout.mode_files(mode):
            if f.repo is None:
                continue
            payload = (f.repo_path * 50).encode() + bytes(range(256)) * (4 if "safetensors" in f.path else 0)
            self.files[f"/{f.repo}/resolve/main/{f.repo_path}"] = payload

    def add_share(self, checkpoint: bytes) -> None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(layout.JOKER_ZIP_MEMBER, checkpoint)
            z.writestr("assets/readme.txt", "other assets")
        self.files["/share/assets.zip"] = buf.getvalue()


@pytest.fixture
def hub():
    h = Hub()
    h.thread.start()
    yield h
    h.server.shutdown()
    h.server.server_close()


def test_fetch_free_mode_places_every_file_and_records_checksums(hub, tmp_path):
    hub.add_mode("free")
    paths = fetch_models("free", tmp_path, hf_endpoint=hub.url, log=lambda s: None)
    assert not layout.missing_files("free", tmp_path)
    assert len(paths) == len(layout.mode_files("free"))
    unet = tmp_path / layout.SD15_DIR / "unet" / "diffusion_pytorch_model.safetensors"
    assert unet.read_bytes() == hub.files[f"/{layout.SD15_REPO}/resolve/main/unet/diffusion_pytorch_model.safetensors"]
    sums = (tmp_path / layout.CHECKSUMS).read_text()
    assert hashlib.sha256(unet.read_bytes()).hexdigest() in sums
    hub.requests.clear()  # a second run verifies against the record and touches no network
    fetch_models("free", tmp_path, hf_endpoint=hub.url, log=lambda s: None)
    assert hub.requests == []


def test_fetch_resumes_a_partial_download_with_a_range_request(hub, tmp_path):
    hub.add_mode("free")
    url_path = f"/{layout.CONTROLNET_REPO}/resolve/main/diffusion_pytorch_model.safetensors"
    body = hub.files[url_path]
    dest = tmp_path / layout.CONTROLNET_DIR / "diffusion_pytorch_model.safetensors"
    dest.parent.mkdir(parents=True)
    dest.with_name(dest.name + ".part").write_bytes(body[:300])
    fetch_models("free", tmp_path, hf_endpoint=hub.url, log=lambda s: None)
    assert dest.read_bytes() == body
    assert ("GET", url_path, "bytes=300-") in hub.requests


def test_fetch_refuses_a_file_whose_checksum_does_not_match(hub, tmp_path):
    hub.add_mode("free")
    url_path = f"/{layout.SD15_REPO}/resolve/main/unet/diffusion_pytorch_model.safetensors"
    hub.announced[url_path] = "0" * 64
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch_models("free", tmp_path, hf_endpoint=hub.url, log=lambda s: None)
    assert not (tmp_path / layout.SD15_DIR / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_cli_fetch_joker_mode_extracts_the_checkpoint_from_the_share(hub, tmp_path, capsys):
    hub.add_mode("joker")
    checkpoint = b"PK-not-really-a-torch-file" * 100
    hub.add_share(checkpoint)
    rc = cli_main(["fetch-models", "--mode", "joker", "--models-dir", str(tmp_path), "--hf-endpoint", hub.url,
                   "--joker-url", hub.url + "/share/assets.zip"])
    assert rc == 0
    assert (tmp_path / layout.JOKER_CHECKPOINT).read_bytes() == checkpoint
    assert not (tmp_path / layout.JOKER_CHECKPOINT).with_name("assets.zip").exists()  # archive removed
    assert not layout.missing_files("joker", tmp_path)
    assert cli_main(["check-models", "--mode", "joker", "--models-dir", str(tmp_path)]) == 0
    assert "joker: ready" in capsys.readouterr().out


def test_cli_fetch_reports_a_broken_share_archive(hub, tmp_path, capsys):
    hub.add_mode("joker")
    hub.files["/share/assets.zip"] = b"this is not a zip"
    rc = cli_main(["fetch-models", "--mode", "joker", "--models-dir", str(tmp_path), "--hf-endpoint", hub.url,
                   "--joker-url", hub.url + "/share/assets.zip"])
    assert rc == 1
    assert "not the authors' assets.zip" in capsys.readouterr().err
    assert not (tmp_path / layout.JOKER_CHECKPOINT).exists()

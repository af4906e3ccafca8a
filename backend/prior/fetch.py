"""`joker-head fetch-models`: download what a prior mode needs into the models dir (layout in docs/MODELS.md).

Every file goes through ``backend.download`` (a ``.part`` file resumed with HTTP Range, moved into place only when
complete and, where a checksum is known, verified). Checksums:
- Hugging Face serves the sha256 of every LFS file (the weights) as the ``X-Linked-Etag`` of its resolve URL;
  it is read first and the download is verified against it.
- The authors' ``assets.zip`` publishes none; the checkpoint is extracted from it with zip's CRC-32 check.
- Every fetched file's sha256 is recorded in ``<models>/checksums.json``; a later run skips a file whose content
  still matches its record, without touching the network.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Optional

from backend.download import DownloadError, download, sha256_file
from backend.prior import layout

HF_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
Log = Callable[[str], None]


def hf_url(endpoint: str, repo: str, path: str) -> str:
    return f"{endpoint.rstrip('/')}/{repo}/resolve/main/{path}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # keep the first response: it carries X-Linked-Etag
        return None


def published_sha256(url: str, timeout: float = 30.0) -> Optional[str]:
    """The sha256 a Hugging Face resolve URL announces for an LFS file, or None (small git files have none)."""
    request = urllib.request.Request(url, method="HEAD")
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            headers = response.headers
    except urllib.error.HTTPError as e:
        if e.code >= 400:
            raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
        headers = e.headers  # 3xx: the redirect to the CDN
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {e}") from e
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").strip('W/"')
    return etag.lower() if re.fullmatch(r"[0-9a-fA-F]{64}", etag) else None


class Checksums:
    """``<models>/checksums.json``: {relative path: sha256} of fetched files."""

    def __init__(self, models_dir: Path) -> None:
        self.path = Path(models_dir) / layout.CHECKSUMS
        self.data: dict[str, str] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def matches(self, rel: str, file: Path) -> bool:
        return rel in self.data and file.is_file() and sha256_file(file) == self.data[rel]

    def record(self, rel: str, file: Path) -> None:
        self.data[rel] = sha256_file(file)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def _progress(log: Log, name: str) -> Callable[[int, Optional[int]], None]:
    state = {"last": -1}

    def report(done: int, total: Optional[int]) -> None:
        pct = int(100 * done / total) if total else -1
        if pct // 10 != state["last"] // 10:
            state["last"] = pct
            log(f"  {name}: {done / 2**20:.1f} MiB" + (f" ({pct}%)" if total else ""))
    return report


def fetch_hf_file(f: layout.ModelFile, models_dir: Path, endpoint: str, sums: Checksums, log: Log) -> Path:
    dest = Path(models_dir) / f.path
    if sums.matches(f.path, dest):
        log(f"ok {f.path} (checksum recorded)")
        return dest
    url = hf_url(endpoint, f.repo, f.repo_path)
    expected = published_sha256(url)
    log(f"get {f.path} <- {url}")
    download(url, dest, sha256=expected, progress=_progress(log, f.path))
    sums.record(f.path, dest)
    return dest


def fetch_joker_checkpoint(models_dir: Path, share_url: str, sums: Checksums, log: Log,
                           keep_archive: bool = False) -> Path:
    """Download the authors' assets.zip (resumable) and extract the checkpoint from it (CRC-checked)."""
    dest = Path(models_dir) / layout.JOKER_CHECKPOINT
    if sums.matches(layout.JOKER_CHECKPOINT, dest):
        log(f"ok {layout.JOKER_CHECKPOINT} (checksum recorded)")
        return dest
    archive = dest.parent / "assets.zip"
    log(f"get {archive.name} <- {share_url}")
    download(share_url, archive, progress=_progress(log, archive.name))
    part = dest.with_name(dest.name + ".part")
    try:
        with zipfile.ZipFile(archive) as z, z.open(layout.JOKER_ZIP_MEMBER) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)  # zipfile raises BadZipFile on a CRC mismatch
    except (zipfile.BadZipFile, KeyError) as e:
        part.unlink(missing_ok=True)
        archive.unlink(missing_ok=True)
        raise DownloadError(f"{archive} is not the authors' assets.zip with {layout.JOKER_ZIP_MEMBER} ({e}); it was "
                            "deleted — run the command again") from e
    os.replace(part, dest)
    sums.record(layout.JOKER_CHECKPOINT, dest)
    if not keep_archive:
        archive.unlink()
    return dest


def fetch_models(mode: str, models_dir: Path, hf_endpoint: str = HF_ENDPOINT,
                 share_url: str = layout.JOKER_SHARE_URL, keep_archive: bool = False,
                 log: Log = lambda s: print(s, file=sys.stderr)) -> list[Path]:
    """Fetch every file ``mode`` (joker | free | all) needs that is not already in place; return their paths."""
    modes = ("joker", "free") if mode == "all" else (mode,)
    sums, done, seen = Checksums(models_dir), [], set()
    for m in modes:
        for f in layout.mode_files(m):
            if f.path in seen:
                continue
            seen.add(f.path)
            if f.repo is None:
                done.append(fetch_joker_checkpoint(models_dir, share_url, sums, log, keep_archive))
            else:
                done.append(fetch_hf_file(f, models_dir, hf_endpoint, sums, log))
    return done

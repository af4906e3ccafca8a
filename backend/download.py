"""Resumable, checksummed downloads (rigs, model weights). Standard library only.

A download goes to ``<dest>.part``; an interrupted one resumes with an HTTP Range request; the file is moved into
place only after its size and sha256 match, so a half-downloaded or corrupt file never sits at ``dest``.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from shared.errors import JokerError

CHUNK = 1 << 20
Progress = Callable[[int, Optional[int]], None]  # (bytes so far, total or None)


class DownloadError(JokerError, RuntimeError):
    """A failed or corrupt download; the message says what was kept and how to resume."""

    default_code = "download_failed"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: Optional[str] = None, progress: Optional[Progress] = None,
             timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` (resuming a ``.part`` file), verify ``sha256`` if given, return ``dest``.

    An existing ``dest`` with the right checksum is kept without any network access.
    """
    dest = Path(dest)
    if dest.exists() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            total = _total_size(response, have if resumed else 0)
            done = have if resumed else 0
            with open(part, "ab" if resumed else "wb") as f:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the .part already holds everything
            pass
        else:
            raise DownloadError(f"download of {url} failed: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DownloadError(f"download of {url} failed: {e} — the partial file {part} is kept; run the same "
                            "command again to resume") from e
    if sha256 is not None:
        got = sha256_file(part)
        if got != sha256:
            part.unlink()
            raise DownloadError(f"checksum mismatch for {url}: expected sha256 {sha256}, received {got}; the file "
                                "was deleted — run the command again, and if it persists the source has changed")
    os.replace(part, dest)
    return dest


def _total_size(response, offset: int) -> Optional[int]:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None

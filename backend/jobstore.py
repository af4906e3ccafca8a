"""Jobs on disk: one folder per job under the jobs dir, written so that a crash never leaves a half-written result.

    <jobs_dir>/<job id>/request.json       kind, params, client, input frame descriptions, request digest
    <jobs_dir>/<job id>/inputs/<name>.bin  raw input payloads (arrays as raw bytes, PNGs as files)
    <jobs_dir>/<job id>/state.json         state, timestamps, error — replaced atomically on every change
    <jobs_dir>/<job id>/progress.jsonl     progress events, one JSON line each (seq, stage, step, ...)
    <jobs_dir>/<job id>/work/              the runner's scratch and checkpoints
    <jobs_dir>/<job id>/result/            meta.json + artifact files; appears only complete (renamed into place)

Job ids are validated against ``shared.protocol.JOB_ID`` before they touch a path. A result's rename into place is
its commit point; :meth:`JobStore.sweep` removes what a crash left half-written.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from backend.runner import Artifact
from shared.errors import JokerError
from shared.protocol import JOB_ID, NAME, Blob, Payload, Png


log = logging.getLogger("joker_head.jobstore")


class StoreError(JokerError, RuntimeError):
    """Storage failed (disk full, permissions): the message says what to do."""

    default_code = "storage"
    default_hint = "fix the server's storage (see the message), then resubmit"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not re.fullmatch(JOB_ID, job_id):
        raise ValueError(f"invalid job id {job_id!r}")
    return job_id


def request_digest(kind: str, params: Any, payloads: dict[str, Payload]) -> str:
    """sha256 over a request's content: an idempotent resubmission has the same digest."""
    h = hashlib.sha256(json.dumps([kind, params], sort_keys=True).encode())
    for name in sorted(payloads):
        value = payloads[name]
        h.update(name.encode())
        h.update(value.tobytes() if isinstance(value, np.ndarray) else value.data)
    return h.hexdigest()


@dataclass
class JobRecord:
    job: str
    kind: str
    client: str
    digest: str
    state: str = "queued"
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    error: Optional[dict] = None
    last_seq: int = 0
    attempts: int = 0  # runs started; > 0 on a restart means the runner may resume from its checkpoint
    started: float = 0.0  # unix time the last run started (queue wait = started - created)


class JobStore:
    """Persistent job records. Single writer per job: the server's main thread or the job's worker."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def dir(self, job_id: str) -> Path:
        return self.root / _check_id(job_id)

    def exists(self, job_id: str) -> bool:
        return (self.dir(job_id) / "state.json").exists()

    # --- writing ------------------------------------------------------------------------------------------------
    def create(self, record: JobRecord, params: Any, payloads: dict[str, Payload]) -> None:
        """Write a new job's request and inputs; the job exists only once state.json is in place."""
        final, tmp = self.dir(record.job), None
        try:
            tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=".new-"))
            (tmp / "inputs").mkdir()
            (tmp / "work").mkdir()
            descs = {}
            for name, value in payloads.items():
                descs[name] = _describe(value)
                data = np.ascontiguousarray(value).tobytes() if isinstance(value, np.ndarray) else value.data
                (tmp / "inputs" / f"{name}.bin").write_bytes(data)
            request = {"kind": record.kind, "params": params, "client": record.client, "inputs": descs,
                       "digest": record.digest}
            (tmp / "request.json").write_text(json.dumps(request))
            _atomic_write(tmp / "state.json", json.dumps(self._state_dict(record)).encode())
            os.replace(tmp, final)
        except OSError as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise StoreError(f"cannot store job {record.job} in {self.root}: {e.strerror or e} — "
                             f"{_fix(e, self.root)}") from e

    def save_state(self, record: JobRecord) -> None:
        record.updated = time.time()
        try:
            _atomic_write(self.dir(record.job) / "state.json", json.dumps(self._state_dict(record)).encode())
        except OSError as e:
            raise StoreError(f"cannot update job {record.job}: {e.strerror or e}") from e

    def append_progress(self, job_id: str, event: dict) -> None:
        """Append one progress line. A lost line (disk full) only loses history, never the job."""
        try:
            with open(self.dir(job_id) / "progress.jsonl", "a") as f:
                f.write(json.dumps(event) + "\n")
        except OSError:
            pass

    def save_result(self, job_id: str, meta: dict, artifacts: list[Artifact]) -> None:
        """Write the result into a temporary folder, fsync it, then rename it into place in one step."""
        job_dir, tmp = self.dir(job_id), None
        try:
            tmp = Path(tempfile.mkdtemp(dir=job_dir, prefix=".result-"))
            listing = []
            for art in artifacts:
                if not re.fullmatch(NAME, art.name):
                    raise StoreError(f"artifact name {art.name!r} is not a safe file name")
                _atomic_write(tmp / art.name, art.data)
                listing.append({"name": art.name, "media_type": art.media_type, "size": len(art.data)})
            _atomic_write(tmp / "meta.json", json.dumps({"meta": meta, "artifacts": listing}).encode())
            old = None
            if (job_dir / "result").exists():  # a rerun: move the old result aside (sweep() removes it after a crash)
                old = Path(tempfile.mkdtemp(dir=job_dir, prefix=".result-old-"))
                os.replace(job_dir / "result", old / "result")
            os.replace(tmp, job_dir / "result")  # the commit point: from here on the job has its result
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except (OSError, StoreError) as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, StoreError):
                raise
            raise StoreError(f"cannot store the result of job {job_id}: {e.strerror or e} — {_fix(e, self.root)}; "
                             "then resubmit the job with the same id") from e

    # --- reading ------------------------------------------------------------------------------------------------
    def load(self, job_id: str) -> JobRecord:
        s = json.loads((self.dir(job_id) / "state.json").read_text())
        known = {f.name for f in dataclasses.fields(JobRecord)}
        return JobRecord(**{k: v for k, v in s.items() if k in known})  # fields of other versions are ignored

    def load_all(self) -> list[JobRecord]:
        records = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and re.fullmatch(JOB_ID, d.name) and (d / "state.json").exists():
                try:
                    records.append(self.load(d.name))
                except (OSError, ValueError, TypeError):
                    continue  # unreadable record: leave it for an operator, never crash the server
        return records

    def sweep(self) -> None:
        """Remove what a crash (kill -9, power loss) left half-written: new jobs, results, temporary files."""
        leftovers = list(self.root.glob(".new-*"))
        for d in self.root.iterdir():
            if d.is_dir() and re.fullmatch(JOB_ID, d.name):
                leftovers += list(d.glob(".result-*")) + list(d.glob("*.tmp-*"))
        for p in leftovers:
            log.info("removing %s, left half-written by a crash", p)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)

    def last_seq(self, job_id: str) -> int:
        """The highest progress seq on disk (state.json is only rewritten when the state changes)."""
        return max((e["seq"] for e in self.progress(job_id, 0, limit=1) if isinstance(e.get("seq"), int)), default=0)

    def request(self, job_id: str) -> dict:
        return json.loads((self.dir(job_id) / "request.json").read_text())

    def inputs(self, job_id: str) -> dict[str, Payload]:
        descs = self.request(job_id)["inputs"]
        out: dict[str, Payload] = {}
        for name, d in descs.items():
            data = (self.dir(job_id) / "inputs" / f"{name}.bin").read_bytes()
            if d["kind"] == "array":
                out[name] = np.frombuffer(data, dtype=np.dtype(d["dtype"]).newbyteorder("<")).reshape(d["shape"])
            elif d["kind"] == "png":
                out[name] = Png(data)
            else:
                out[name] = Blob(data, d.get("media_type", "application/octet-stream"))
        return out

    def progress(self, job_id: str, since: int = 0, limit: int = 200) -> list[dict]:
        path = self.dir(job_id) / "progress.jsonl"
        if not path.exists():
            return []
        events = []
        for line in path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line after a crash
            if isinstance(e, dict) and isinstance(e.get("seq"), int) and e["seq"] > since:
                events.append(e)
        return events[-limit:]

    def has_result(self, job_id: str) -> bool:
        return (self.dir(job_id) / "result" / "meta.json").exists()

    def result(self, job_id: str) -> tuple[dict, list[Artifact]]:
        rdir = self.dir(job_id) / "result"
        listing = json.loads((rdir / "meta.json").read_text())
        arts = [Artifact(a["name"], a["media_type"], (rdir / a["name"]).read_bytes()) for a in listing["artifacts"]]
        return listing["meta"], arts

    def workdir(self, job_id: str) -> Path:
        return self.dir(job_id) / "work"

    @staticmethod
    def _state_dict(r: JobRecord) -> dict:
        return {"job": r.job, "kind": r.kind, "client": r.client, "digest": r.digest, "state": r.state,
                "created": r.created, "updated": r.updated, "error": r.error, "last_seq": r.last_seq, "attempts": r.attempts,
                "started": r.started}


def _fix(e: OSError, root: Path) -> str:
    """What an operator should do about a storage error."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"free disk space in {root} or point --jobs-dir at a larger disk"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"make {root} writable for the server"
    return f"check the disk holding {root}"


def _describe(value: Payload) -> dict:
    if isinstance(value, np.ndarray):
        return {"kind": "array", "dtype": value.dtype.name, "shape": list(value.shape)}
    if isinstance(value, Png):
        return {"kind": "png"}
    return {"kind": "bytes", "media_type": value.media_type}

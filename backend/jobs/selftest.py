"""The ``selftest`` job: reports progress, returns an artifact of the requested size, fails on request.

It needs no GPU and no weights, so operators use it to check a deployment (`joker-head submit selftest`), and the
protocol tests, benchmarks and reliability runs use it to drive the real server.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from backend.runner import Artifact, JobContext, JobFailed, JobResult
from shared.jobs import JOB_KINDS, SelftestParams


class SelftestRunner:
    kind = JOB_KINDS["selftest"]
    resumable = True  # it checkpoints its step counter in the job's workdir

    def run(self, params: SelftestParams, inputs: dict, ctx: JobContext) -> JobResult:
        checkpoint = ctx.workdir / "step.txt"
        start = int(checkpoint.read_text()) if ctx.resume and checkpoint.exists() else 0
        for step in range(start, params.steps):
            if step == params.fail_at:
                if params.failure == "out_of_memory":
                    raise JobFailed("out of memory on the compute device (simulated)",
                                    "choose a smaller preset or free GPU memory", code="out_of_memory")
                raise RuntimeError(f"selftest failure requested at step {step}")
            time.sleep(params.step_s)
            tmp = checkpoint.with_suffix(".tmp")  # replaced in one step: a kill -9 never leaves a torn checkpoint
            tmp.write_text(str(step + 1))
            os.replace(tmp, checkpoint)  # before reporting: a step the client saw is never redone
            ctx.progress("selftest", step + 1, params.steps, f"step {step + 1} of {params.steps}")
        data = inputs.get("data")
        digest = hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest() if data is not None else None
        payload = np.random.default_rng(0).integers(0, 256, params.result_bytes, dtype=np.uint8).tobytes()
        meta = {"steps": params.steps, "resumed_from": start, "input_sha256": digest,
                "result_sha256": hashlib.sha256(payload).hexdigest()}
        return JobResult(meta, [Artifact("payload.bin", "application/octet-stream", payload)])

"""The one error family: every error carries (code, message, hint) the same way, and a job fails with a family
error's wire form unchanged, whichever layer raised it."""

from __future__ import annotations

import pytest

from backend.download import DownloadError
from backend.export.errors import ExportError
from backend.jobstore import StoreError
from backend.prior.errors import PriorError
from backend.rigs.ict import RigFetchError
from backend.runner import JobContext, JobFailed, JobResult
from backend.server import JobError
from shared import protocol as P
from shared.client import ClientError
from shared.errors import JokerError
from shared.jobs import JOB_KINDS
from shared.png import PngError, png_info
from shared.spec import SpecError


@pytest.mark.parametrize("cls", [SpecError, P.ProtocolError, JobError, PngError, StoreError, DownloadError,
                                 RigFetchError, JobFailed, PriorError, ExportError])
def test_every_error_class_belongs_to_the_family(cls):
    assert issubclass(cls, JokerError)


def test_wire_form_names_the_field_only_when_there_is_one():
    plain = PriorError("no weights", "fetch them", code="missing_weights")
    assert plain.to_dict() == {"code": "missing_weights", "message": "no weights", "hint": "fetch them"}
    spec = SpecError("prior.steps", "int in [1, 50]", 99, "lower it")
    assert spec.to_dict() == {"code": "invalid_field", "field": "prior.steps", "expected": "int in [1, 50]",
                              "received": "99", "hint": "lower it",
                              "message": "prior.steps: expected int in [1, 50], received 99 — lower it"}


def test_defaults_give_every_error_a_code_and_hint():
    with pytest.raises(PngError) as e:
        png_info(b"not a png")
    assert (e.value.code, str(e.value)) == ("bad_png", "not a PNG (wrong signature)") and e.value.hint
    store = StoreError("disk full")
    assert store.code == "storage" and "resubmit" in store.hint


def test_protocol_error_message_is_built_from_the_wire_form():
    job = "0" * 32
    err = JobError(job, "kind", "one of selftest", "nope", "pick one", "unknown_kind")
    refused = P.Error.from_exception(err, err.job)
    assert (refused.code, refused.field, refused.job, refused.hint) == ("unknown_kind", "kind", job, "pick one")
    failed = P.Error.from_exception(ExportError("no surface", "lower ExportConfig.iso"), job)
    assert (failed.code, failed.message, failed.hint, failed.field) == ("job_failed", "no surface",
                                                                        "lower ExportConfig.iso", "")


class _Raises:
    """A runner whose work fails with a given family error, as an ML package would raise it."""

    kind = JOB_KINDS["selftest"]

    def __init__(self, error: JokerError):
        self.error = error

    def run(self, params, inputs, ctx: JobContext) -> JobResult:
        raise self.error


@pytest.mark.parametrize("error", [
    PriorError("the joker prior is missing 3 file(s)", "run `joker-head fetch-models`", code="missing_weights"),
    ExportError("the field is empty", "check the previews"),
    StoreError("cannot store the result: no space left"),
])
def test_a_job_fails_with_the_family_error_unchanged(make_server, make_client, error):
    server = make_server({"selftest": _Raises(error)})
    client = make_client(server.endpoint)
    job = client.submit("selftest", {"steps": 1})
    with pytest.raises(ClientError) as info:
        client.wait(job, timeout_s=10)
    got = info.value.error
    assert (got.code, got.message, got.hint) == (error.code, str(error), error.hint)

"""The one error family: every error the project raises on purpose carries (code, message, hint) the same way.

``code`` is a stable machine-readable word (documented in docs/PROTOCOL.md), the message says what went wrong and the
hint what to do about it. Errors about one field (a spec check, a protocol rule) also carry ``field``, ``expected`` and
``received``. :meth:`JokerError.to_dict` is the one wire form: the protocol's ``error`` message and a failed job's
record are both built from it, so a failure reads the same in the CLI, the add-on and the server log.

Each layer derives its own class (``SpecError`` in shared/spec.py, ``PriorError`` in backend/prior, ``ExportError`` in
backend/export, ``JobFailed`` for runners, ``StoreError`` for the job store, ...), so ML code raises errors the server
understands without importing the server, the job store or the runner.
"""

from __future__ import annotations

from typing import ClassVar


class JokerError(Exception):
    """Base of the family. ``str(error)`` is the message; subclasses choose a default code and hint."""

    default_code: ClassVar[str] = "error"
    default_hint: ClassVar[str] = ""
    # The request and job an error answers, where known (the protocol decoder fills them from a header it could
    # read, a job refusal names its job), so even a refused request's error reaches its caller.
    req: "str | None" = None
    job: "str | None" = None

    def __init__(self, message: str, hint: str = "", code: str = "", *, field: str = "", expected: str = "",
                 received: str = ""):
        super().__init__(message)
        self.code = code or self.default_code
        self.hint = hint or self.default_hint
        self.field, self.expected, self.received = field, expected, received

    @property
    def message(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, str]:
        """The wire form: code, message and hint; field, expected and received when the error is about a field."""
        out = {"code": self.code, "message": str(self), "hint": self.hint}
        if self.field:
            out.update(field=self.field, expected=self.expected, received=self.received)
        return out

"""The fit library's errors: the project's one error shape (code, message, hint) via :class:`shared.spec.SpecError`.

``field`` names the image (the caller's ``name``, e.g. ``inputs.reference``), so a job can hand the error to the
user unchanged; the library never imports the job service.
"""

from __future__ import annotations

from typing import Any

from shared.spec import SpecError


class PhotoError(SpecError):
    """A photo that cannot be read: corrupt, not an image, or over the protocol's limits."""

    def __init__(self, name: str, expected: str, received: Any, hint: str, code: str = "invalid_image"):
        super().__init__(name, expected, received, hint, code=code)


class FitError(SpecError):
    """No face found, a face too small to fit, or a fit that did not converge."""

    def __init__(self, name: str, expected: str, received: Any, hint: str, code: str = "fit_failed"):
        super().__init__(name, expected, received, hint, code=code)

"""The export's own error: a field with no surface, non-finite densities.

It belongs to the project's error family (:class:`shared.errors.JokerError`), so a job that exports fails with this
error's code, message and hint unchanged, while the export never imports the job service.
"""

from __future__ import annotations

from shared.errors import JokerError


class ExportError(JokerError):
    """An export problem the user can fix; the hint names the setting to change."""

    default_code = "job_failed"  # the documented code for a failure its message explains

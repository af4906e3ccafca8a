"""The prior's own error: missing weights, a checkpoint that does not fit, an unknown mode, GPU out of memory.

It belongs to the project's error family (:class:`shared.errors.JokerError`), so a job that loads or runs the prior
fails with this error's code, message and hint unchanged, while the prior never imports the job service.
"""

from __future__ import annotations

from shared.errors import JokerError


class PriorError(JokerError):
    """A prior problem the user can fix; the message names the file or field, the hint says how."""

    default_code = "job_failed"  # the documented code for a failure its message explains; callers pass finer ones

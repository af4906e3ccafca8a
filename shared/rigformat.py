"""The converted rig file's identity: the ``kind`` and ``version`` arrays every converter writes
(:mod:`shared.ict`, :mod:`backend.rigs`) and :meth:`shared.morphable.MorphableModel.load` checks.

Its own module so that the converters and the loader both depend on it instead of on each other.
"""

from __future__ import annotations

FORMAT_KIND = "joker-head-morphable"
FORMAT_VERSION = 1

"""serve, ping, submit, status, fetch, cancel, keys — filled in by the foundation work."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    pass

"""The `joker-head` command line. Each sub-command lives in its own module under ``backend.commands`` and exposes
``register(subparsers)``; this file only lists them, so `grep` leads from a command name to its code."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from backend.commands import demo_cmd, model_cmds, portrait_cmds, rig_cmds, server_cmds

COMMAND_MODULES = [server_cmds, portrait_cmds, rig_cmds, model_cmds, demo_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="joker-head",
        description="joker-head backend: serve Blender's requests on a GPU box, and tools around it.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except TimeoutError as e:  # no server: say what to check, without a traceback
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``kalshi-data``: the operator CLI. Each sub-command lives in its own module with
``add_parser(subparsers)`` and ``run(args) -> int``; this file only dispatches.

Expected failures (bad config, unreachable database, changed migration) print ONE line to
stderr and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from kalshi_data import (
    book_cmd,
    config_check,
    demo,
    export_cmd,
    gaps,
    healthcheck,
    import_cmd,
    migrate,
    probe_limits,
    query_cmd,
    trades_cmd,
    verify,
)

COMMANDS: tuple[ModuleType, ...] = (migrate, config_check, healthcheck, export_cmd, import_cmd, demo, verify,
                                     gaps, book_cmd, trades_cmd, query_cmd, probe_limits)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kalshi-data", description="kalshi-data operator commands")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

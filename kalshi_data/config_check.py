"""``kalshi-data config-check --service gatherer|deduplicator FILE``: validate a config file the
way the service will at start, without starting it (exit 0 valid, 2 invalid, one line).

Operators run it before ``systemctl restart``; the services use the same loader.
"""

from __future__ import annotations

import argparse
import sys

from shared.config import load_config
from shared.errors import ConfigError


def _schema(service: str) -> type:
    if service == "gatherer":
        from gatherer.config import GathererConfig

        return GathererConfig
    from deduplicator.config import DeduplicatorConfig

    return DeduplicatorConfig


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("config-check", help="validate a service config file (exit 2 when invalid)")
    p.add_argument("--service", choices=("gatherer", "deduplicator"), required=True)
    p.add_argument("file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        load_config(args.file, _schema(args.service))
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"{args.file}: valid {args.service} config")
    return 0

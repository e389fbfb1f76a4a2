"""``kalshi-deduplicator --config FILE [--reset-cursor GATHERER]``.

Exit codes: 0 stopped by SIGTERM/SIGINT (after finishing the current pages) or reset done;
1 runtime failure (cannot listen, production unreachable for ``--reset-cursor``);
2 bad config, printed as ONE line ``config error: <key path>: <reason>``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from shared.signals import STOP_SIGNALS, EarlyStop

if TYPE_CHECKING:
    from deduplicator.config import DeduplicatorConfig

_EARLY = EarlyStop()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kalshi-deduplicator",
                                description="Merge every gatherer database into production, exactly once.")
    p.add_argument("--config", required=True, help="YAML config (see examples/deduplicator.yaml)")
    p.add_argument("--reset-cursor", metavar="GATHERER",
                   help="rewind GATHERER's cursors after its database was rebuilt or restored, then exit")
    return p


async def _serve(cfg: DeduplicatorConfig) -> int:
    from prometheus_client import CollectorRegistry

    from deduplicator.app import App

    app = App(cfg, CollectorRegistry(), process_metrics=True)
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, app.request_stop)
    if _EARLY.requested:  # told to stop while starting: nothing has been read, nothing to flush
        return 0
    try:
        await app.start()
    except OSError as exc:
        print(f"error: cannot listen for /health or /metrics: {exc.strerror or exc}", file=sys.stderr)
        await app.stop()
        return 1
    await app.wait()
    await app.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    _EARLY.install()  # before the heavy imports below: a stop during start-up still exits cleanly
    from deduplicator.app import reset_gatherer
    from deduplicator.config import DeduplicatorConfig
    from shared.config import fetch_secrets, load_config
    from shared.errors import ConfigError, KalshiDataError, SecretError
    from shared.logging import setup_logging

    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config, DeduplicatorConfig)
        fetch_secrets(cfg)  # a missing or unreadable secret stops us here, naming it
        if args.reset_cursor is not None and args.reset_cursor not in {g.id for g in cfg.gatherers}:
            raise ConfigError("--reset-cursor", f"unknown gatherer \"{args.reset_cursor}\" (configured: "
                              + ", ".join(g.id for g in cfg.gatherers) + ")")
    except (ConfigError, SecretError) as exc:
        text = str(exc) if isinstance(exc, ConfigError) else f"config error: {exc}"
        print(text, file=sys.stderr)
        return 2
    setup_logging(cfg.logging)
    if args.reset_cursor is not None:
        _EARLY.restore()  # a one-shot command: Ctrl-C and SIGTERM interrupt it as usual
        if _EARLY.requested:
            return 0  # told to stop before anything was changed
        try:
            print(asyncio.run(reset_gatherer(cfg, args.reset_cursor)))
        except KalshiDataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    return asyncio.run(_serve(cfg))


if __name__ == "__main__":
    sys.exit(main())

"""``kalshi-gatherer --config FILE``: run one gatherer until SIGTERM/SIGINT.

Exit codes: 0 after a clean stop (everything accepted was flushed), 1 when rows could not be
flushed before the deadline or on an unexpected error, 2 for a bad config, an unusable private
key or a key id Kalshi rejects at start. Expected failures print ONE line on stderr, no traceback.
An unreachable local database at start is not fatal: the app logs one line per attempt and waits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TYPE_CHECKING

from shared.signals import STOP_SIGNALS, EarlyStop

if TYPE_CHECKING:
    from gatherer.config import GathererConfig
    from shared.errors import ConfigError, SecretError

log = logging.getLogger("gatherer.main")
_EARLY = EarlyStop()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kalshi-gatherer",
                                description="Capture Kalshi market data into the local database.")
    p.add_argument("--config", required=True, metavar="FILE", help="gatherer YAML config")
    return p


async def _run(cfg: GathererConfig) -> int:
    from gatherer.app import GathererApp

    app = GathererApp(cfg, process_metrics=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    if _EARLY.requested:  # told to stop while starting: nothing has been read, nothing to flush
        return 0
    start = asyncio.create_task(app.start(), name="start")
    waiter = asyncio.create_task(stop.wait(), name="signal")
    done, _ = await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if start in done:
        exc = start.exception()
        if exc is not None:
            waiter.cancel()
            await app.stop()
            raise exc
        await waiter
    else:
        start.cancel()
        try:
            await start
        except (asyncio.CancelledError, Exception):
            pass
    left = await app.stop()
    return 0 if left == 0 else 1


def _describe_config_error(path: str, exc: ConfigError | SecretError) -> str:
    """The config error, naming the API key id when the private key is what failed."""
    from shared.errors import ConfigError

    if isinstance(exc, ConfigError) and exc.path.startswith("kalshi.private_key"):
        key_id = _key_id_of(path)
        if key_id:
            return f"private key for API key id {key_id} is unusable: {exc}"
    return str(exc)


def _key_id_of(path: str) -> str | None:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
        kid = doc["kalshi"]["api_key_id"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return kid if isinstance(kid, str) else None


def main(argv: list[str] | None = None) -> int:
    _EARLY.install()  # before the heavy imports below: a stop during start-up still exits cleanly
    from gatherer.config import GathererConfig
    from gatherer.errors import AuthRejected, KeyInvalid
    from shared.config import fetch_secrets, load_config
    from shared.errors import ConfigError, SecretError
    from shared.logging import setup_logging

    args = _parser().parse_args(argv)
    try:
        cfg = load_config(args.config, GathererConfig)
        fetch_secrets(cfg)  # a missing or unreadable secret stops us here, naming it
    except (ConfigError, SecretError) as exc:
        print(f"kalshi-gatherer: {_describe_config_error(args.config, exc)}", file=sys.stderr)
        return 2
    setup_logging(cfg.logging, gatherer_id=cfg.gatherer_id)
    try:
        return asyncio.run(_run(cfg))
    except (KeyInvalid, AuthRejected) as exc:
        print(f"kalshi-gatherer: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, SecretError) as exc:
        print(f"kalshi-gatherer: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

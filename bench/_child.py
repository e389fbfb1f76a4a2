"""Runs one benchmark in its own process (so its peak RSS is its own): ``python -m bench._child
NAME OUT.json`` with the run's ``Context`` as JSON in ``$BENCH_CTX``."""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import traceback

from ._model import Context


def main() -> int:
    name, out = sys.argv[1], sys.argv[2]
    ctx = Context.load(os.environ["BENCH_CTX"])
    logging.basicConfig(level=logging.ERROR)  # the components' own logs would drown the table
    for noisy in ("psycopg", "psycopg.pool", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)  # outages are on purpose here
    # SIGTERM from the runner (timeout, Ctrl-C) must still run finally: blocks (clusters, sims)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    mod = importlib.import_module(f"bench.{name}")
    try:
        rows = mod.run(ctx)
    except BaseException as exc:  # noqa: BLE001 - reported to the runner, then exit 1
        with open(out, "w") as f:
            json.dump({"error": f"{type(exc).__name__}: {exc}",
                       "traceback": traceback.format_exc()}, f)
        return 1
    with open(out, "w") as f:
        json.dump({"rows": [r.as_dict() for r in rows]}, f, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())

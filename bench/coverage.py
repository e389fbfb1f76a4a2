"""coverage: from a gatherer's start to every open market subscribed and every book snapshotted,
for the ``xl`` preset (1,000,000 markets) under Kalshi's Basic-tier limits model.

The simulator (own process) enforces what Kalshi does: 200 read tokens/s, 10 per request (a
1,000-market /markets page costs 10 tokens), 1,000 markets per subscription (error 26), 20
commands/s per socket (27), 150 sockets per key. The gatherer (this process) runs with the
production pool (2 ticker, 2 trade, 2 lifecycle, 144 orderbook sockets, markets spread evenly),
starting from its default markets_per_subscription (5,000) and learning the limit from the
exchange's answers, against a bench PostgreSQL. Phases timed from ``GathererApp.start``:

* registry loaded (full REST sync of series, events, markets; ``start`` returns after it);
* every open market subscribed (``orderbook_delta`` subscriptions acknowledged);
* every open market's book snapshotted (a clean WS book in the router for each);
* every one of those snapshots committed to the database.

A timing, not a pass/fail test: ``ok`` only says every phase completed within the time limit.
``--quick`` uses the ``large`` preset (300,000 markets). Not in the default run (it takes
minutes): ``python -m bench --only coverage``.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

from ._db import fresh_database
from ._gatherer import config, make_app, metric
from ._harness import peak_rss_bytes
from ._model import Context, Row
from ._simproc import SimProcess

LIMIT_S = 6_000.0  # give up after this long from start (the bench child timeout is longer)
ORDERBOOK_SOCKETS = 144


async def arun(ctx: Context) -> list[Row]:
    preset = "large" if ctx.quick else "xl"
    workdir = Path(ctx.workdir) / "coverage"
    workdir.mkdir(parents=True, exist_ok=True)
    # Kalshi's Basic tier and its WebSocket limits: the simulator's defaults, stated here since
    # SimProcess switches both off for the other benchmarks.
    sim = SimProcess(workdir, preset=preset, seed=11, clock_speed=1.0, rate=200.0,
                     churn_per_s=0.0, tier="basic", anon_tier="basic", truth_tickers=False,
                     ws_max_markets=1_000, ws_cmd_rate=20, ws_max_connections=150, ws_reject_mve=True,
                     ws_max_buffer=5_000_000, ping_interval_s=10.0, pong_timeout_s=120.0)
    sim.start(timeout=300)
    app = None
    marks: dict[str, float | None] = {"registry": None, "subscribed": None, "books": None,
                                      "stored": None}
    extra: dict[str, Any] = {}
    try:
        info = await sim.control("GET", "/info")
        per_conn = math.ceil(info["markets"] / ORDERBOOK_SOCKETS)
        dsn = fresh_database(ctx.pg_dsn, "gatherer", "bench_coverage")
        doc = config(sim, dsn, workdir,
                     connections={"ticker": 2, "trade": 2, "lifecycle": 2,
                                  "orderbook": ORDERBOOK_SOCKETS,
                                  "markets_per_connection": per_conn, "stagger_s": 0.05},
                     poller={"enabled": True, "interval_s": 900.0},
                     registry={"statuses": ["open"]})
        app = make_app(doc)
        t0 = time.monotonic()
        await app.start()
        marks["registry"] = time.monotonic() - t0
        assert app.registry is not None and app.conns is not None and app.router is not None
        deadline = t0 + LIMIT_S
        while time.monotonic() < deadline and marks["stored"] is None:
            await asyncio.sleep(1.0)
            now = time.monotonic() - t0
            open_n = app.registry.active_count
            if marks["subscribed"] is None and app.conns.subscribed_markets() >= open_n:
                marks["subscribed"] = now
            if marks["books"] is None and app.router.books_held() >= open_n:
                marks["books"] = now
            if marks["books"] is not None and \
                    metric(app, "writer_inserts_total", writer="orderbook_snapshots") >= open_n:
                marks["stored"] = now
        m = app.metrics
        extra = {
            "markets": info["markets"], "open_markets": app.registry.active_count,
            "markets_subscribed": app.conns.subscribed_markets(),
            "books": app.router.books_held(),
            "seconds": {k: None if v is None else round(v, 1) for k, v in marks.items()},
            "learnt_markets_per_subscription": app.conns.sub_limit.value,
            "commands_per_s": app.conns.cmd_rate.per_s,
            "subscriptions": sum(len(c.subs.sids()) for c in app.conns.conns),
            "error_26": metric(app, "conn_manager_subscribe_errors_total",
                               channel="orderbook_delta", error_code="26"),
            "error_27": metric(app, "conn_manager_subscribe_errors_total",
                               channel="orderbook_delta", error_code="27"),
            "parked_sockets": m.conn_manager_parked_connections._value.get(),
            "rest_429": m.rest_rate_limited_total._value.get(),
            "rest_tokens": metric(app, "rest_tokens_spent_total", bucket="read"),
            "sim_start_s": round(sim.start_s, 1),
        }
    finally:
        if app is not None:
            await app.stop()
        sim.stop()
    done = marks["stored"] is not None
    return [Row("coverage", f"gatherer start → every market subscribed and snapshotted ({preset}, "
                            "Basic tier)", "s", ok=done, peak_rss=peak_rss_bytes(),
                extra=extra,
                note=f"registry {extra.get('seconds', {}).get('registry')} s, subscribed "
                     f"{extra.get('seconds', {}).get('subscribed')} s, books "
                     f"{extra.get('seconds', {}).get('books')} s, stored "
                     f"{extra.get('seconds', {}).get('stored')} s after start")]


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))

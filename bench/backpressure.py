"""memory under backpressure: gatherer RSS while its local database is stopped for 60 s at
~5,000 msgs/s; and what happens when it comes back.

A private cluster (it is stopped mid-run), a ``tiny`` simulator (50 markets: the gatherer starts
in seconds; the message rate is what matters here) in its own process on a real-time clock at
5,000 engine msgs/s, and a real ``GathererApp`` here with ``writer.queue_max_rows``
lowered to 100,000 so the bound is reached inside the outage. RSS is sampled every 0.5 s before,
during and after the outage; after restart we time until the backlog is gone (under 5,000 rows
queued in all writers: one second of traffic).
``--quick``: a 10 s outage.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from shared.pgcluster import PgCluster

from ._db import ROLE_PASSWORDS, fresh_database
from ._gatherer import config, make_app, metric
from ._harness import peak_rss_bytes, rss_bytes
from ._model import Context, Row
from ._simproc import SimProcess

QUEUE_MAX = 100_000
RATE = 5_000.0
STEADY_ROWS = 5_000  # one second of traffic


async def arun(ctx: Context) -> list[Row]:
    outage = 10.0 if ctx.quick else 60.0
    workdir = Path(ctx.workdir) / "backpressure"
    workdir.mkdir(parents=True, exist_ok=True)
    from shared.migrate import apply_migrations, apply_roles

    cluster = PgCluster.create(fast=True, name="bench-bp")
    sim = None
    app = None
    try:
        tdsn = cluster.create_database("template_gatherer")
        apply_migrations(tdsn, "gatherer")
        apply_roles(tdsn, ROLE_PASSWORDS)
        dsn = fresh_database(cluster.dsn("postgres"), "gatherer", "bench_bp")
        sim = SimProcess(workdir, preset="tiny", profile="fp2026", seed=9, clock_speed=1.0,
                         rate=RATE, churn_per_s=0.0, truth_tickers=False,
                         ws_max_buffer=2_000_000, ping_interval_s=10.0, pong_timeout_s=120.0)
        sim.start()
        app = make_app(config(sim, dsn, workdir, writer={
            "queue_max_rows": QUEUE_MAX, "retry_max_s": 1.0, "flush_deadline_s": 30.0}))
        await app.start()
        await asyncio.sleep(10.0 if not ctx.quick else 5.0)  # snapshots stored, steady flow

        def queued() -> int:
            return sum(w.queued_rows for w in app.writers.values())  # type: ignore[union-attr]

        before = rss_bytes()
        samples: list[tuple[float, int, int]] = []
        t_stop = time.monotonic()
        cluster.stop(mode="immediate")
        while time.monotonic() - t_stop < outage:
            await asyncio.sleep(0.5)
            samples.append((time.monotonic() - t_stop, rss_bytes(), queued()))
        cluster.start()
        t_back = time.monotonic()
        # drained: back to the steady state, where traffic keeps a few hundred rows in the
        # writers' 200 ms flush windows (queues are never exactly empty under load)
        while queued() > STEADY_ROWS and time.monotonic() - t_back < 60:
            await asyncio.sleep(0.1)
        drain_s = time.monotonic() - t_back
        after = rss_bytes()
        bp_s = sum(metric(app, "writer_backpressure_seconds_total", writer=w) for w in app.writers)
        reconnects = sum(metric(app, "conn_manager_reconnects_total", role=r)
                         for r in ("orderbook", "trade", "ticker", "lifecycle"))
        max_rss = max(s[1] for s in samples)
        max_q = max(s[2] for s in samples)
    finally:
        if app is not None:
            await app.stop()
        if sim is not None:
            sim.stop()
        cluster.destroy()
    return [Row("memory under backpressure", f"DB stopped {outage:.0f} s at ~5,000 msgs/s",
                "MB", None, None, f"bounded (queue_max_rows {QUEUE_MAX:,})",
                ok=max_q <= QUEUE_MAX * 8 and max_rss < before + 1.5 * 2**30,
                peak_rss=peak_rss_bytes(),
                extra={"rss_mb_before": round(before / 2**20),
                       "rss_mb_max_outage": round(max_rss / 2**20),
                       "rss_mb_after": round(after / 2**20),
                       "queued_rows_max": max_q, "drain_s_after_restart": round(drain_s, 1),
                       "backpressure_s": round(bp_s, 1), "ws_reconnects": int(reconnects),
                       "rss_mb_timeline": [round(r / 2**20) for _, r, _ in samples[::4]]},
                note="queue_max_rows is per writer (8 writers)")]


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))

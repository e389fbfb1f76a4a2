"""local database outage: the gatherer's PostgreSQL stopped 5 minutes at ~5,000 msgs/s.

The gatherer must keep reading its sockets (Kalshi does not hold frames for a reader that
stopped): rows beyond ``writer.queue_max_rows`` (lowered to 100,000 so the bound is reached
early) go to the on-disk spool and are replayed once the database is back. Reported: loss
(every truth trade stored; per market, stored deltas == truth deltas over the outage span by
exchange time, from the market's first WS snapshot on), resyncs and seq gaps (0: no frame was missed), slow-consumer errors the simulator sent,
backpressure seconds, peak RSS, peak spool bytes, and how long the replay took.

A private cluster (it is stopped mid-run), a ``tiny`` simulator (50 markets, every one
subscribed) in its own process on a real-time clock at 5,000 engine msgs/s, and a real
``GathererApp`` here. ``--quick``: a 20 s outage.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from kalshi_data.books import record_starts
from shared.pgcluster import PgCluster

from ._db import ROLE_PASSWORDS, fresh_database
from ._gatherer import config, make_app, metric
from ._harness import peak_rss_bytes, rss_bytes
from ._model import Context, Row
from ._simproc import SimProcess

QUEUE_MAX = 100_000
RATE = 5_000.0
STEADY_ROWS = 5_000  # one second of traffic
PAGE = 200_000  # truth records per control API page


async def _truth(sim: SimProcess, kind: str, start: int) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    since = start
    while True:
        page = await sim.control("GET", f"/truth/{kind}?since={since}&limit={PAGE}")
        out += page["records"]
        if len(page["records"]) < PAGE:
            return out
        since = page["next"]


async def arun(ctx: Context) -> list[Row]:
    outage = 20.0 if ctx.quick else 300.0
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
                         ping_interval_s=10.0, pong_timeout_s=120.0)
        sim.start()
        app = make_app(config(sim, dsn, workdir, writer={
            "queue_max_rows": QUEUE_MAX, "retry_max_s": 1.0, "flush_deadline_s": 30.0},
            spool={"directory": str(workdir / "spool"), "max_bytes": 8 * 2**30},
            poller={"enabled": False}))
        await app.start()
        await asyncio.sleep(10.0 if not ctx.quick else 5.0)  # snapshots stored, steady flow

        def queued() -> int:
            return sum(w.queued_rows for w in app.writers.values())  # type: ignore[union-attr]

        def spooled() -> tuple[int, int]:
            rows = sum(w.spooled_rows for w in app.writers.values())  # type: ignore[union-attr]
            return rows, int(sum(metric(app, "writer_spool_bytes", writer=w) for w in app.writers))  # type: ignore[union-attr]

        before = rss_bytes()
        resyncs0 = sum(_samples(app, "resync_requests_total").values())
        gaps0 = sum(_samples(app, "conn_manager_sequence_gaps_total").values())
        span_lo = (time.time_ns() // 1000) - 2_000_000  # exchange µs (the sim runs on wall time)
        deltas_n0 = int((await sim.control("GET", "/stats"))["deltas"])
        samples: list[tuple[float, int, int, int]] = []
        t_stop = time.monotonic()
        cluster.stop(mode="immediate")
        while time.monotonic() - t_stop < outage:
            await asyncio.sleep(1.0)
            rows, nbytes = spooled()
            samples.append((time.monotonic() - t_stop, rss_bytes(), rows, nbytes))
        msgs_during = metric(app, "ws_client_messages_received_total", role="orderbook")
        cluster.start()
        t_back = time.monotonic()
        while (queued() > STEADY_ROWS or spooled()[0] > 0) and time.monotonic() - t_back < 300:
            await asyncio.sleep(0.2)
        drain_s = time.monotonic() - t_back
        after = rss_bytes()
        await sim.control("POST", "/rate", {"rate": 0.0})  # nothing new from here
        span_hi = (time.time_ns() // 1000) - 2_000_000
        # the gatherer has read everything sent (its frame count stands still), and committed it
        read, t_read = -1.0, time.monotonic()
        while time.monotonic() - t_read < 600:
            now_read = sum(metric(app, "ws_client_messages_received_total", role=r)
                           for r in ("orderbook", "trade", "ticker", "lifecycle"))
            if now_read == read:
                break
            read = now_read
            await asyncio.sleep(3.0)
        catch_up_s = time.monotonic() - t_read
        for w in app.writers.values():
            await w.settled(w.mark)
        subscribed = set(app.conns.planner.owner)  # type: ignore[union-attr]  # open markets only
        peak_rss = peak_rss_bytes()  # the gatherer's peak, before the truth download below
        import psycopg

        with psycopg.connect(dsn) as conn:
            db_trades = {r[0] for r in conn.execute("SELECT trade_id::text FROM trades").fetchall()}
            # A market's deltas count from its first WS snapshot (as in the soak and the
            # acceptance test): one opening during the run moves a moment before it is subscribed.
            starts = {t: s + 1000 for t, s in record_starts(conn).items()}  # after its millisecond
            db_per = Counter(t for t, ts in conn.execute(
                "SELECT ticker, exchange_ts FROM orderbook_deltas WHERE exchange_ts >= %s AND "
                "exchange_ts < %s", (span_lo, span_hi)) if int(ts) >= starts.get(t, span_hi))
        truth_trades = [t for t in await _truth(sim, "trades", 0) if int(t["ts_us"]) >= span_lo]  # type: ignore[call-overload]
        # the simulator also moves books of markets not open yet, which nobody subscribes to
        truth_per: Counter[str] = Counter()
        before_subscription = 0
        for d in await _truth(sim, "deltas", max(0, deltas_n0 - PAGE)):
            ts, ticker = int(d["ts_ms"]) * 1000, str(d["ticker"])  # type: ignore[call-overload]
            if not (span_lo <= ts < span_hi and ticker in subscribed):
                continue
            if ts < starts.get(ticker, span_hi):
                before_subscription += 1
            else:
                truth_per[ticker] += 1
        truth_deltas = sum(truth_per.values())
        lost_by_market = {t: n - db_per.get(t, 0) for t, n in truth_per.items() if n != db_per.get(t, 0)}
        lost_trades = sum(1 for t in truth_trades if t["trade_id"] not in db_trades)
        sim_faults = (await sim.control("GET", "/faults"))["counts"]
        bp_s = sum(metric(app, "writer_backpressure_seconds_total", writer=w) for w in app.writers)
        resyncs = sum(_samples(app, "resync_requests_total").values()) - resyncs0
        gaps = sum(_samples(app, "conn_manager_sequence_gaps_total").values()) - gaps0
        reconnects = sum(metric(app, "conn_manager_reconnects_total", role=r)
                         for r in ("orderbook", "trade", "ticker", "lifecycle"))
        replayed = sum(metric(app, "writer_spool_replayed_rows_total", writer=w) for w in app.writers)
        max_rss = max(s[1] for s in samples)
        max_spool_rows = max(s[2] for s in samples)
        max_spool_bytes = max(s[3] for s in samples)
    finally:
        if app is not None:
            await app.stop()
        if sim is not None:
            sim.stop()
        cluster.destroy()
    lost_deltas = sum(n for n in lost_by_market.values() if n > 0)
    extra_deltas = -sum(n for n in lost_by_market.values() if n < 0)
    ok = (lost_trades == 0 and lost_deltas == 0 and extra_deltas == 0 and resyncs == 0 and gaps == 0 and bp_s == 0
          and not sim_faults.get("error_25_overflow"))
    return [Row("local database outage", f"DB stopped {outage:.0f} s at ~5,000 msgs/s (spool)",
                "MB", None, None, "zero loss, zero resyncs, sockets never stall",
                ok=ok, peak_rss=peak_rss,
                extra={"lost_trades": lost_trades, "truth_trades": len(truth_trades),
                       "markets_subscribed": len(subscribed),
                       "lost_deltas": lost_deltas, "truth_deltas": truth_deltas,
                       "extra_deltas": extra_deltas, "deltas_before_subscription": before_subscription,
                       "lost_deltas_by_market": dict(sorted(lost_by_market.items())[:10]),
                       "resync_requests": int(resyncs), "seq_gaps": int(gaps),
                       "slow_consumer_errors": int(sim_faults.get("error_25_overflow", 0)),
                       "ws_reconnects": int(reconnects), "backpressure_s": round(bp_s, 1),
                       "orderbook_msgs_during_outage": int(msgs_during),
                       "spool_rows_max": max_spool_rows, "spool_mb_max": round(max_spool_bytes / 2**20),
                       "spool_rows_replayed": int(replayed), "drain_s_after_restart": round(drain_s, 1),
                       "read_backlog_s_after_drain": round(catch_up_s, 1),
                       "rss_mb_before": round(before / 2**20), "rss_mb_max_outage": round(max_rss / 2**20),
                       "rss_mb_after": round(after / 2**20),
                       "rss_mb_timeline": [round(r / 2**20) for _, r, _, _ in samples[::15]]},
                note=f"queue_max_rows {QUEUE_MAX:,} per writer; rows beyond it spill to the on-disk spool")]


def _samples(app: object, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for fam in app.prom.collect():  # type: ignore[attr-defined]
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))

"""``kalshi-data reconcile`` on one UTC day of trades from the simulator (issue #20).

Set-up (not timed): the simulator on a manual clock starts at yesterday 00:00 UTC and runs the
whole day of virtual time, its engine rate calibrated on the first hour so the day holds about
``ctx.reconcile_trades`` trades; production (a fresh database of the run's cluster) is filled
with exactly the simulator's trades of the day, as the deduplicator would have merged them.

Measured, with one ``RestClient`` (gatherer/rest.py) whose token budget is set out of the way so
the figures are the machine's, not the tier's:

- raw: Kalshi's global ``/markets/trades`` listing for the day, paged with ``limit=1000`` and
  nothing done with the pages (before and after the reconcile run; the faster is the limit);
- ours: the reconciliation of that day (kalshi_data/reconcile.py: hourly slices with their
  margins, the production read, the comparison, a reconcile_runs update per slice), as the
  deduplicator role. Production is complete, so the fix pass has nothing to do.

Tokens are what the client spent (its ``rest_tokens_spent_total``); the time the same tokens take
under a Kalshi tier is tokens / (tier budget x the client's headroom), given in ``extra``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from prometheus_client import CollectorRegistry

from ._db import fresh_database, role_dsn
from ._harness import Sample, peak_rss_bytes, proc_cpu_s, summarise
from ._model import Context, Row
from ._simproc import SimProcess

HOUR_MS = 3_600_000
FIRST_GUESS_TRADE_SHARE = 0.1  # trades per engine event, corrected after the first hour
BASIC_READ_TOKENS_S = 200  # Kalshi's Basic tier read budget (docs.kalshi.com rate limits)
DEFAULT_COST = 10  # tokens per request (RateLimitConfig.default_cost; /markets/trades has no override)


def run(ctx: Context) -> list[Row]:
    return asyncio.run(_run(ctx))


async def _run(ctx: Context) -> list[Row]:
    target = 20_000 if ctx.quick else ctx.reconcile_trades
    day = datetime.now(UTC).date() - timedelta(days=1)
    day_ms = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000
    rate0 = target / 86_400 / FIRST_GUESS_TRADE_SHARE
    sim = SimProcess(Path(ctx.workdir) / "reconcile", preset=ctx.reconcile_preset, seed=20,
                     clock_speed=0.0, step_ms=1000, start_ms=day_ms, rate=rate0)
    sim.start(timeout=300)
    try:
        gen = await _make_day(sim, target, rate0)
        dsn = fresh_database(ctx.pg_dsn, "production", "reconcile")
        load_s = await _load_production(sim, dsn, day, gen["trades"])
        return await _measure(ctx, sim, dsn, day, gen, load_s)
    finally:
        sim.stop()


async def _make_day(sim: SimProcess, target: int, rate0: float) -> dict[str, Any]:
    """24 hours of virtual time; the rate after the first hour aims the day at ``target``."""
    t0 = time.monotonic()
    await sim.control("POST", "/clock/advance", {"ms": HOUR_MS}, timeout=3600)
    first = int((await sim.control("GET", "/stats"))["trades"])
    rate = rate0 * max(target - first, 0) / 23 / max(first, 1)
    await sim.control("POST", "/rate", {"rate": rate})
    for _ in range(23):
        await sim.control("POST", "/clock/advance", {"ms": HOUR_MS}, timeout=3600)
    stats = await sim.control("GET", "/stats")
    return {"trades": int(stats["trades"]), "engine_rate": round(rate, 1), "generate_s": round(time.monotonic() - t0, 1),
            "sim_rss_mb": sim.rss() // 2**20}


async def _load_production(sim: SimProcess, dsn: str, day: date, n: int) -> float:
    """The simulator's trades into production (trades and trade_ids), as merged rows."""
    t0 = time.monotonic()
    now_us = time.time_ns() // 1000
    cols = ("trade_id, ticker, exchange_ts, yes_price, no_price, count, taker_side, taker_outcome_side, "
            "taker_book_side, is_block_trade, source, received_at, gatherer_id, merged_at")
    with psycopg.connect(dsn, autocommit=True) as conn:
        back = (datetime.now(UTC).date() - day).days + 1
        conn.execute("SELECT ensure_partitions(2, %s)", (back,))
        since = 0
        while since < n:
            recs = (await sim.control("GET", f"/truth/trades?since={since}&limit=100000"))["records"]
            if not recs:
                break
            since += len(recs)
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy(f"COPY trades ({cols}) FROM STDIN") as cp:
                    for r in recs:
                        cp.write_row((r["trade_id"], r["ticker"], r["ts_ms"] * 1000, r["yes_price"], r["no_price"],
                                      r["count"], r["taker_side"], r["taker_outcome_side"], r["taker_book_side"],
                                      r["is_block_trade"], "ws", now_us, "gatherer-1", now_us))
                with cur.copy("COPY trade_ids (trade_id, exchange_ts, ticker) FROM STDIN") as cp:
                    for r in recs:
                        cp.write_row((r["trade_id"], r["ts_ms"] * 1000, r["ticker"]))
        conn.execute("VACUUM ANALYZE trades")
        conn.execute("VACUUM ANALYZE trade_ids")
    return time.monotonic() - t0


def _client(sim: SimProcess) -> tuple[Any, Any]:
    from gatherer.config import KalshiConfig, RateLimitConfig
    from gatherer.rest import RestClient
    from kalshi_data.reconcile_cmd import spent_reader
    from shared.kalshi.auth import load_private_key
    from shared.metrics import GathererMetrics

    reg = CollectorRegistry()
    kcfg = KalshiConfig(env="sim", rest_url=sim.rest_url, ws_url=sim.ws_url, api_key_id=sim.key_id,
                        request_timeout_s=60.0)
    key = load_private_key(Path(sim.key_file).read_bytes(), sim.key_id)
    rl = RateLimitConfig(discover=False, read_per_s=1e7, read_capacity=1e7)  # tokens: out of the way
    return RestClient(kcfg, key, rl, GathererMetrics(reg)), spent_reader(reg)


async def _raw(sim: SimProcess, day: date) -> tuple[Sample, int, int]:
    """The day's global listing, pages fetched and decoded, nothing else: (sample, pages, tokens)."""
    from gatherer._ratelimit import Priority

    client, spent = _client(sim)
    lo = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    n = 0
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        async for page in client.trades(min_ts=lo, max_ts=lo + 86_399, limit=1000, priority=Priority.BACKFILL):
            n += len(page)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await client.aclose()
    tokens, pages = spent()
    return Sample(n, wall, cpu), pages, tokens


async def _reconcile(sim: SimProcess, dsn: str, day: date) -> tuple[Sample, dict[str, Any]]:
    from kalshi_data.reconcile import (
        Options,
        compare_day,
        day_start_s,
        finish,
        lock_day,
        start_or_resume,
    )

    client, spent = _client(sim)
    try:
        with psycopg.connect(role_dsn(dsn, "deduplicator"), autocommit=True) as conn:
            c0, t0 = time.process_time(), time.perf_counter()
            lock_day(conn, day)
            run = start_or_resume(conn, day, (day_start_s(day) + 86_400) * 1_000_000, 3600, False)
            await compare_day(conn, client, run, Options(), spent)
            result = finish(conn, run)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await client.aclose()
    return Sample(int(result["kalshi_trades"]), wall, cpu), result


async def _measure(ctx: Context, sim: SimProcess, dsn: str, day: date, gen: dict[str, Any],
                   load_s: float) -> list[Row]:
    sim_cpu0 = proc_cpu_s(sim.pid)
    raw1, raw_pages, raw_tokens = await _raw(sim, day)
    sim_cpu_raw = proc_cpu_s(sim.pid) - sim_cpu0
    sim_cpu0 = proc_cpu_s(sim.pid)
    ours, res = await _reconcile(sim, dsn, day)
    sim_cpu_ours = proc_cpu_s(sim.pid) - sim_cpu0
    raw2, _, _ = await _raw(sim, day)
    raw = max(raw1, raw2, key=lambda s: s.rate)
    n = gen["trades"]
    complete = (res["kalshi_trades"] == res["production_trades"] == raw1.count == n
                and res["missing"] == res["extra"] == res["mismatched"] == 0)
    tokens, pages = int(res["rest_tokens"]), int(res["rest_pages"])
    basic_s = tokens / (BASIC_READ_TOKENS_S * 0.9)
    # A model, not a measurement: a 2.5 M day needs ceil(2.5 M / 1000) full pages plus one partial
    # page per slice; the other requests (the historical cutoff, read per slice) stay as many;
    # time per page as measured here.
    other_requests = tokens // DEFAULT_COST - pages
    ext_pages = -(-2_500_000 // 1000) + 24
    ext_tokens = (ext_pages + other_requests) * DEFAULT_COST
    extra = {
        "day": str(day), "preset": ctx.reconcile_preset, "trades": n, "engine_rate": gen["engine_rate"],
        "generate_s": gen["generate_s"], "load_production_s": round(load_s, 1), "sim_rss_mb": gen["sim_rss_mb"],
        "reconcile_s": round(ours.wall_s, 1), "reconcile_pages": pages, "reconcile_tokens": tokens,
        "raw_s": [round(raw1.wall_s, 1), round(raw2.wall_s, 1)], "raw_pages": raw_pages, "raw_tokens": raw_tokens,
        "time_ratio_reconcile_to_raw": round(ours.wall_s / raw.wall_s, 2) if raw.wall_s else None,
        "sim_cpu_s": {"raw": round(sim_cpu_raw, 1), "reconcile": round(sim_cpu_ours, 1)},
        "basic_tier_s": round(basic_s),
        "extrapolated_2_5m": {"pages": ext_pages, "tokens": ext_tokens,
                              "reconcile_s": round(ours.wall_s / max(pages, 1) * ext_pages),
                              "basic_tier_s": round(ext_tokens / (BASIC_READ_TOKENS_S * 0.9))},
    }
    return [Row("reconcile", f"reconcile one day: {n:,} trades ({ctx.reconcile_preset} simulator)", "trades/s",
                raw=summarise([raw]), ours=summarise([ours]), target="report", ok=complete,
                peak_rss=peak_rss_bytes(), extra=extra,
                note="raw = the same client paging /markets/trades for the day without any comparison or "
                     "DB work; ok = every trade found in production, nothing missing, extra or mismatched; "
                     "basic_tier_s = tokens at Kalshi Basic's 200 read tokens/s x 0.9 headroom; "
                     "extrapolated_2_5m: a model from this run's time per page (not measured)")]

"""soak (``make bench ARGS="--soak"``, never in the default run): one gatherer and the
deduplicator, each in its own process as in production, against the ``xl`` simulator
(``--soak-preset``) for ``--soak-minutes`` (default 30) of 5,000 msgs/s with bursts of 50,000
msgs/s.

- The simulator (``xl``: 1,000,000 markets) runs on a real-time clock, REST token billing off
  (``tier=None``) and its truth log written to a file.
- The gatherer uses the production connection plan (2 ticker, 2 trade, 2 lifecycle sockets,
  orderbook sockets of 5,000 markets each), with as many orderbook sockets as it takes to cover
  every open market of the preset, up to the key's 150 sockets (``connections.max_per_key``);
  past that the markets are spread over the 144 orderbook sockets (xl: ~7,300 each).
- Load: the engine rate is calibrated so the gatherer *receives* ~5,000 msgs/s (both trade and
  ticker sockets count, as they do in production), and every 300 s (60 s in runs under 20
  minutes) it runs ten times faster for 5 s: bursts of ~50,000 msgs/s.
- Deltas count from a market's first WS snapshot (as in the acceptance test): a market opening
  during the run trades a moment before the registry subscribes it
  (``deltas_before_subscription``).

Reported: the gatherer's full garbage collections during the run (count, seconds stopped, the
longest's bucket: shared/heap.py); RSS of the gatherer and of the deduplicator sampled every 10 s and the slope of a
least-squares line over the second half of the run (MB per minute; ~0 = no leak); lag p50/p99 =
production ``merged_at`` - ``received_at`` (socket receive to merged into production) of every
trade and delta of the run; gatherer CPU seconds per million messages received; and, once the
engine is stopped and everything has drained, rows lost and rows duplicated against the
simulator's truth for the run's window (trades by trade_id; deltas as a multiset of (market,
exchange time, side, price, delta)).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ._db import fresh_database
from ._gatherer import config
from ._harness import proc_cpu_s, proc_rss_bytes
from ._model import Context, Row
from ._simproc import SimProcess

MSGS_PER_S = 5_000
BURST_FACTOR = 10  # 50,000 msgs/s
MARKETS_PER_CONN = 5_000
SOCKETS_PER_KEY = 150  # the gatherer's default connections.max_per_key
OTHER_SOCKETS = {"ticker": 2, "trade": 2, "lifecycle": 2}  # the production plan's non-book sockets
SAMPLE_S = 10.0
BURST_WAKE_S = 30.0  # after a burst, rows received this long count as the burst's in the lag split
REPO = Path(__file__).resolve().parents[1]


class Service:
    """``python -m <module> --config FILE`` in its own session, stderr to a file."""

    def __init__(self, module: str, cfg: dict[str, Any], workdir: Path, name: str) -> None:
        self.name = name
        self.path = workdir / f"{name}.yaml"
        self.path.write_text(yaml.safe_dump(cfg))
        self.log = workdir / f"{name}.log"
        self.metrics_url = f"http://127.0.0.1:{cfg['metrics']['port']}/metrics"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, "--config", str(self.path)], cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))  # noqa: SIM115

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _samples(self) -> list[Any]:
        """Every sample of one scrape of the service's /metrics."""
        async with httpx.AsyncClient(timeout=30) as c:
            text = (await c.get(self.metrics_url)).text
        return [s for fam in text_string_to_metric_families(text) for s in fam.samples]

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` matching ``labels`` (0 when absent)."""
        return sum((s.value for s in await self._samples()
                    if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())), 0.0)

    async def gc_pauses(self) -> dict[str, float]:
        """Full (generation 2) collections so far: count, seconds in all, and the cumulative
        count per bucket bound (shared/heap.py's python_gc_pause_seconds)."""
        out: dict[str, float] = {}
        for s in await self._samples():
            name, _, key = s.name.rpartition("_")
            if name == "python_gc_pause_seconds" and s.labels.get("generation") == "2":
                out[f"le={s.labels['le']}" if key == "bucket" else key] = s.value
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def _gc_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Full collections during the run: how many, seconds stopped, and the bucket bound the
    longest one fell under."""
    n = after.get("count", 0.0) - before.get("count", 0.0)
    longest = None
    for key in sorted((k for k in after if k.startswith("le=")),
                      key=lambda k: float(k[3:].replace("+Inf", "inf"))):
        if after[key] - before.get(key, 0.0) >= n:
            longest = key[3:]
            break
    return {"gc_full_collections": int(n),
            "gc_full_pause_s": round(after.get("sum", 0.0) - before.get("sum", 0.0), 2),
            "gc_longest_full_pause_le_s": longest if n else None}


def _slope_mb_per_min(samples: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over the second half of the samples, MB per minute."""
    half = samples[len(samples) // 2:]
    if len(half) < 3:
        return float("nan")
    xs = [t / 60 for t, _ in half]
    ys = [r / 2**20 for _, r in half]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def _until(pred: Any, timeout: float, what: str, every: float = 1.0) -> None:
    deadline = time.monotonic() + timeout
    while not await pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"soak: timed out waiting for {what}")
        await asyncio.sleep(every)


def _load_truth(c: psycopg.Connection[Any], path: Path, lo_ms: int, hi_ms: int) -> tuple[int, int]:
    """COPY the truth log's deltas and trades with ts_ms in [lo_ms, hi_ms] into TEMP tables
    truth_d / truth_t, streaming; returns their counts."""
    c.execute("CREATE TEMP TABLE truth_d (ticker text, exchange_ts bigint, side text, price int, "
              "delta bigint)")
    c.execute("CREATE TEMP TABLE truth_t (trade_id uuid PRIMARY KEY)")
    nd = nt = 0
    with open(path, "rb") as f, c.cursor().copy("COPY truth_d FROM STDIN") as cd:
        trades = []
        for line in f:
            if line.startswith(b'{"k":"delta"'):
                r = orjson.loads(line)
                if lo_ms <= r["ts_ms"] <= hi_ms:
                    cd.write_row((r["ticker"], r["ts_ms"] * 1000, r["side"], r["price"],
                                  r["delta"]))
                    nd += 1
            elif line.startswith(b'{"k":"trade"'):
                r = orjson.loads(line)
                if lo_ms <= r["ts_ms"] <= hi_ms:
                    trades.append(r["trade_id"])
    with c.cursor().copy("COPY truth_t FROM STDIN") as ct:
        for t in trades:
            ct.write_row((t,))
            nt += 1
    c.execute("ANALYZE truth_d")
    c.execute("ANALYZE truth_t")
    return nd, nt


def one_row(c: psycopg.Connection[Any], sql: str) -> Any:
    row = c.execute(sql).fetchone()
    return row[0] if row else None


def _compare(prod: str, truth: Path, lo_ms: int, hi_ms: int,
             bursts: list[tuple[int, int]]) -> dict[str, Any]:
    """Rows lost (in truth, not in production) and duplicated or invented (in production beyond
    truth) for the window, in SQL against the truth loaded with COPY; and the merge lag, of every
    row and split by when the gatherer received it: in a burst or its wake (``bursts``: received_at
    ranges in µs) or under the steady load, so a miss says which load it comes from."""
    lo, hi = lo_ms * 1000, hi_ms * 1000
    with psycopg.connect(prod, autocommit=True) as c:
        nd, nt = _load_truth(c, truth, lo_ms, hi_ms)
        # A market's deltas count from its first WS snapshot (subscribed), as in the acceptance
        # test: one opening during the run trades a moment before the registry subscribes it.
        c.execute("CREATE TEMP TABLE starts AS SELECT ticker, min(coalesce(last_delta_ts, "
                  "snapshot_ts)) + 1000 AS s FROM orderbook_snapshots WHERE source <> 'rest' "
                  "GROUP BY ticker")
        c.execute("CREATE TEMP TABLE excused AS SELECT d.* FROM truth_d d LEFT JOIN starts s "
                  "USING (ticker) WHERE s.s IS NULL OR d.exchange_ts < s.s")
        c.execute("DELETE FROM truth_d d WHERE NOT EXISTS (SELECT 1 FROM starts s WHERE "
                  "s.ticker = d.ticker AND d.exchange_ts >= s.s)")
        got_d = ("SELECT ticker, exchange_ts, side, price, delta FROM orderbook_deltas p "
                 "WHERE exchange_ts BETWEEN %(lo)s AND %(hi)s AND EXISTS (SELECT 1 FROM starts s "
                 "WHERE s.ticker = p.ticker AND p.exchange_ts >= s.s)")
        win = {"lo": lo, "hi": hi}
        n_excused = one_row(c, "SELECT count(*) FROM excused")

        def one(sql: str) -> Any:
            row = c.execute(sql, win).fetchone()
            assert row is not None
            return row

        d_lost = one(f"SELECT count(*) FROM (SELECT * FROM truth_d EXCEPT ALL ({got_d})) x")[0]
        d_extra = one(f"SELECT count(*) FROM (({got_d}) EXCEPT ALL SELECT * FROM truth_d) x")[0]
        t_lost = one("SELECT count(*) FROM truth_t t WHERE NOT EXISTS (SELECT 1 FROM trades p "
                     "WHERE p.trade_id = t.trade_id)")[0]
        t_extra = one("SELECT (SELECT count(*) - count(DISTINCT trade_id) FROM trades WHERE "
                      "exchange_ts BETWEEN %(lo)s AND %(hi)s) + (SELECT count(*) FROM trades p "
                      "WHERE p.exchange_ts BETWEEN %(lo)s AND %(hi)s AND NOT EXISTS (SELECT 1 "
                      "FROM truth_t t WHERE t.trade_id = p.trade_id))")[0]
        c.execute("CREATE TEMP TABLE lags AS SELECT received_at, (merged_at - received_at) / 1e6 "
                  "AS lag FROM trades WHERE exchange_ts BETWEEN %(lo)s AND %(hi)s UNION ALL "
                  "SELECT received_at, (merged_at - received_at) / 1e6 FROM orderbook_deltas "
                  "WHERE exchange_ts BETWEEN %(lo)s AND %(hi)s", win)
        c.execute("CREATE TEMP TABLE bursts (lo BIGINT, hi BIGINT)")
        with c.cursor().copy("COPY bursts FROM STDIN") as cp:
            for b in bursts:
                cp.write_row(b)
        (p50, p99), lag_max, n_lag = one(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag), max(lag), "
            "count(*) FROM lags")
        split = {}
        for name, cond in (("steady", "NOT EXISTS"), ("burst", "EXISTS")):
            (q50, q99), n = one(
                "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY lag), count(*) "
                f"FROM lags l WHERE {cond} (SELECT 1 FROM bursts b WHERE l.received_at BETWEEN "
                "b.lo AND b.hi)")
            split[name] = {"p50_s": round(float(q50 or 0.0), 3),
                           "p99_s": round(float(q99 or 0.0), 3), "rows": n}
    return {"truth_deltas": nd, "deltas_before_subscription": n_excused, "truth_trades": nt,
            "deltas_lost": d_lost, "deltas_duplicated": d_extra,
            "trades_lost": t_lost, "trades_duplicated": t_extra,
            "lag_p50_s": round(float(p50 or 0.0), 3), "lag_p99_s": round(float(p99 or 0.0), 3),
            "lag_max_s": round(float(lag_max or 0.0), 3), "lag_rows": n_lag, "lag_by_load": split}


async def arun(ctx: Context) -> list[Row]:
    minutes = ctx.soak_minutes or 30.0
    preset = ctx.soak_preset
    workdir = Path(ctx.workdir) / "soak"
    workdir.mkdir(parents=True, exist_ok=True)
    truth = workdir / "truth.jsonl"
    gdsn = fresh_database(ctx.pg_dsn, "gatherer", "soak_gatherer")
    pdsn = fresh_database(ctx.pg_dsn, "production", "soak_production")
    sim = SimProcess(workdir, preset=preset, profile="fp2026", seed=17, clock_speed=1.0,
                     rate=0.0, churn_per_s=0.0, truth_tickers=False, truth_path=str(truth),
                     ping_interval_s=10.0, pong_timeout_s=60.0)
    sim.start(timeout=300)
    services: list[Service] = []
    t_setup = time.monotonic()
    try:
        # every initial market of the preset is open within 10 minutes of its start
        n_markets = (await sim.control("GET", "/info"))["markets"]
        # as many orderbook sockets as that takes at MARKETS_PER_CONN, within the gatherer's
        # per-key socket cap (connections.max_per_key): past it the gatherer parks the extra
        # sockets, which would never turn healthy, so the markets are spread over fewer
        ob = min(math.ceil(n_markets * 1.05 / MARKETS_PER_CONN),
                 SOCKETS_PER_KEY - sum(OTHER_SOCKETS.values()))
        per_conn = max(MARKETS_PER_CONN, math.ceil(n_markets * 1.05 / ob))
        from .dedup import _db_section

        g = config(sim, gdsn, workdir, connections={
            **OTHER_SOCKETS, "orderbook": ob, "max_per_key": SOCKETS_PER_KEY,
            "markets_per_connection": per_conn, "stagger_s": 0.02,
            "ping_interval_s": 10.0, "ping_timeout_s": 60.0, "silent_role_s": 600.0},
            poller={"enabled": True, "interval_s": 900.0},
            rate_limit={"read_per_s": 1000.0, "read_capacity": 1000.0},  # 100 requests/s
            logging={"level": "WARNING", "format": "text"})
        services.append(Service("gatherer", g, workdir, "gatherer"))
        from shared.pgcluster import free_port

        d = {"gatherers": [{"id": "gatherer-bench", "database": _db_section(gdsn, "dedup_reader",
                                                                             workdir)}],
             "production": _db_section(pdsn, "deduplicator", workdir),
             "health": {"host": "127.0.0.1", "port": free_port()},
             "metrics": {"host": "127.0.0.1", "port": free_port()},
             "logging": {"level": "WARNING", "format": "text"}}
        services.append(Service("deduplicator", d, workdir, "deduplicator"))
        gat, ded = services

        async def subscribed() -> bool:
            if not gat.alive() or not ded.alive():
                raise RuntimeError(f"soak: a service exited; see {workdir}/*.log")
            try:
                live = await gat.metric("market_registry_active_markets")
                return live > 0 and await gat.metric("gatherer_markets_active") >= live and \
                    await gat.metric("conn_manager_connections_healthy") >= sum(OTHER_SOCKETS.values()) + ob
            except httpx.HTTPError:
                return False

        await _until(subscribed, 1800, "every open market subscribed")
        await _until(lambda: _quiet(gat), 1800, "the start-up snapshots written")
        setup_s = time.monotonic() - t_setup

        # calibrate: messages received per engine msg/s
        probe = 2_000.0
        await sim.control("POST", "/rate", {"rate": probe})
        await asyncio.sleep(5)
        m0, t0 = await gat.metric("ws_client_messages_received_total"), time.monotonic()
        await asyncio.sleep(20)
        per = (await gat.metric("ws_client_messages_received_total") - m0) / \
            (time.monotonic() - t0) / probe
        base = MSGS_PER_S / per if per > 0 else probe
        # the measured run
        burst_every = 300.0 if minutes >= 20 else 60.0
        burst_s = 5.0
        rss: dict[str, list[tuple[float, int]]] = {"gatherer": [], "deduplicator": []}
        await sim.control("POST", "/rate", {"rate": base})
        run_lo_ms = (await sim.control("GET", "/info"))["now_ms"]
        c0 = {s.name: proc_cpu_s(s.pid) for s in services}
        gc0 = await gat.gc_pauses()
        m0 = await gat.metric("ws_client_messages_received_total")
        t0 = time.monotonic()
        end = t0 + minutes * 60
        next_burst = t0 + burst_every / 2
        bursts = 0
        burst_us: list[tuple[int, int]] = []
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_burst:
                b_lo = time.time_ns() // 1000
                await sim.control("POST", "/rate", {"rate": base * BURST_FACTOR})
                await asyncio.sleep(burst_s)
                await sim.control("POST", "/rate", {"rate": base})
                # the burst's wake: what it left queued is received and merged late after it
                burst_us.append((b_lo, time.time_ns() // 1000 + int(BURST_WAKE_S * 1e6)))
                bursts += 1
                next_burst += burst_every
            for s in services:
                if not s.alive():
                    raise RuntimeError(f"soak: {s.name} exited; see {s.log}")
                rss[s.name].append((time.monotonic() - t0, proc_rss_bytes(s.pid)))
            await asyncio.sleep(min(SAMPLE_S, max(0.0, next_burst - time.monotonic())))
        await sim.control("POST", "/rate", {"rate": 0.0})
        run_s = time.monotonic() - t0
        run_hi_ms = (await sim.control("GET", "/info"))["now_ms"]
        msgs = await gat.metric("ws_client_messages_received_total") - m0
        cpu = {s.name: proc_cpu_s(s.pid) - c0[s.name] for s in services}
        gc_run = _gc_summary(gc0, await gat.gc_pauses())
        # drain: the gatherer's queues empty, then production stops growing
        await _until(lambda: _quiet(gat), 600, "the gatherer's queues to drain")
        await _until(_merged(pdsn), 600, "the deduplicator to catch up", every=5.0)
        gaps = await gat.metric("conn_manager_sequence_gaps_total")
        overflows = (await sim.control("GET", "/faults"))["counts"].get("error_25_overflow", 0)
        rss_peak = {s.name: proc_rss_bytes(s.pid, peak=True) for s in services}
    finally:
        for s in reversed(services):
            s.stop()
        sim.stop()
    cmp = _compare(pdsn, truth, run_lo_ms, run_hi_ms, burst_us)
    slope = {k: round(_slope_mb_per_min(v), 2) for k, v in rss.items()}
    lost = cmp["deltas_lost"] + cmp["trades_lost"]
    dup = cmp["deltas_duplicated"] + cmp["trades_duplicated"]
    ok = lost == 0 and dup == 0 and cmp["lag_p99_s"] < 1.0 and abs(slope["gatherer"]) < 1.0
    extra = {
        "minutes": round(run_s / 60, 1), "setup_s": round(setup_s), "markets": n_markets,
        "orderbook_sockets": ob, "msgs": int(msgs), "msgs_per_s": round(msgs / run_s),
        "bursts": bursts, "burst": f"{BURST_FACTOR}x for {burst_s:.0f} s every {burst_every:.0f} s",
        "engine_rate": round(base), "cpu_s_per_m_gatherer": round(cpu["gatherer"] / msgs * 1e6, 1)
        if msgs else None,
        "cpu_s_per_m_dedup": round(cpu["deduplicator"] / msgs * 1e6, 1) if msgs else None,
        "rss_slope_mb_per_min": slope,
        "rss_mb_start": {k: round(v[0][1] / 2**20) for k, v in rss.items() if v},
        "rss_mb_end": {k: round(v[-1][1] / 2**20) for k, v in rss.items() if v},
        "rss_mb_peak": {k: round(v / 2**20) for k, v in rss_peak.items()},
        "seq_gaps": gaps, "sim_overflows": overflows, **gc_run, **cmp,
    }
    (workdir.parent / "soak_rss.json").write_text(orjson.dumps(rss).decode())
    return [Row("soak", f"soak: {preset}, {minutes:g} min at 5,000 msgs/s + bursts", "min", None, None,
                "RSS slope ~0, lag p99 < 1 s, 0 lost", ok=ok,
                peak_rss=rss_peak.get("gatherer"), extra=extra,
                note="gatherer + deduplicator processes; REST tier unlimited (simulator "
                     "tier=None, gatherer bucket 100/s)")]


async def _quiet(gat: Service) -> bool:
    """The gatherer's writer queues are (nearly) empty."""
    try:
        return await gat.metric("writer_queue_rows") < 1000
    except httpx.HTTPError:
        return False


def _merged(pdsn: str) -> Any:
    """A check that is true once production's row count stopped moving between two calls."""
    last = [-1]

    async def check() -> bool:
        async with await psycopg.AsyncConnection.connect(pdsn, autocommit=True) as c:
            cur = await c.execute("SELECT (SELECT count(*) FROM trades) + (SELECT count(*) "
                                  "FROM orderbook_deltas)")
            row = await cur.fetchone()
        n = int(row[0]) if row else 0
        same, last[0] = last[0] == n, n
        return same

    return check


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))

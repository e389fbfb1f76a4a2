"""Helpers for the gatherer tests: config files against a real simulator + real PostgreSQL,
and queries over what landed in the gatherer database.

Not a test module (no ``test_`` prefix): imported by the tests and by ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import yaml
from psycopg.conninfo import conninfo_to_dict

from gatherer.config import GathererConfig
from kalshi_data.books import book_at
from shared.config import Environment, parse_config
from shared.pgcluster import free_port

#: Short intervals so a fault-and-recover cycle fits in seconds. The REST budget is the key's
#: own (the simulator's Basic tier, read from /account/limits), as in production.
FAST: dict[str, Any] = {
    "connections": {"ticker": 1, "trade": 1, "lifecycle": 1, "orderbook": 2,
                    "markets_per_connection": 1000, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
                    "stagger_s": 0.02, "ping_interval_s": 1.0, "ping_timeout_s": 3.0,
                    "silent_role_s": 30.0},
    "writer": {"batch_size": 500, "flush_interval_ms": 50, "queue_max_rows": 5000,
               "flush_deadline_s": 10.0, "retry_max_s": 0.5, "notify": False},
    "poller": {"enabled": True, "interval_s": 3.0, "batch_size": 100},
    "backfill": {"sweep_interval_s": 5.0, "overlap_s": 1.0, "max_window_s": 600.0},
    "registry": {"reconcile_interval_s": 5.0, "statuses": ["open", "unopened"],
                 "exchange_status_interval_s": 2.0},
    "retention": {"interval_s": 3600.0},
    "logging": {"level": "INFO", "format": "text"},
}


def now_us() -> int:
    return time.time_ns() // 1000


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_dict(sim: Any, key_id: str, key_file: Path, dsn: str, password_file: Path,
                **overrides: Any) -> dict[str, Any]:
    """A complete gatherer config (as YAML-ready dict) for ``sim`` and database ``dsn``."""
    d = conninfo_to_dict(dsn)
    base: dict[str, Any] = {
        "gatherer_id": "gatherer-t",
        "kalshi": {"env": "sim", "rest_url": sim.rest_url, "ws_url": sim.ws_url,
                   "api_key_id": key_id, "private_key_file": str(key_file),
                   "request_timeout_s": 3.0},
        "database": {"host": d.get("host", "127.0.0.1"), "port": int(d.get("port", 5432)),
                     "dbname": d["dbname"], "user": "gatherer",
                     "password_file": str(password_file), "sslmode": "disable",
                     "connect_timeout_s": 2.0},
        "health": {"host": "127.0.0.1", "port": free_port(), "db_probe_interval_s": 0.5},
        "metrics": {"host": "127.0.0.1", "port": free_port()},
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "spool": {"directory": str(key_file.parent / "spool")},
    }
    return _merge(_merge(base, FAST), overrides)


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def load(doc: dict[str, Any]) -> GathererConfig:
    return parse_config(yaml.safe_dump(doc), GathererConfig, Environment(env={}))


async def wait_for(pred: Callable[[], Any], timeout: float, what: str, step: float = 0.1) -> Any:
    """Poll ``pred`` (sync or async) until truthy; fail the test with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        r = pred()
        if isinstance(r, Awaitable):
            r = await r
        if r:
            return r
        last = r
        await asyncio.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last={last!r})")


def query(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


async def aquery(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    return await asyncio.to_thread(query, dsn, sql, params)


def truth_trade_ids(sim: Any) -> set[str]:
    return {t["trade_id"] for t in sim.truth.trades()}


def rebuild_book(dsn: str, ticker: str) -> dict[str, list[list[int]]] | None:
    """The book of ``ticker`` now, rebuilt from the gatherer DB by the one rebuild
    (kalshi_data.books: the snapshot's recorded place in the stream plus the deltas after it)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        book = book_at(conn, ticker, now_us() + 3_600_000_000)
    if book.snapshot_ts is None:
        return None
    return {"yes": [list(x) for x in book.yes], "no": [list(x) for x in book.no]}


def _how_rebuilt(dsn: str, ticker: str) -> str:
    """Which snapshot a failed book was rebuilt from, and why it may be uncertain: the first
    thing to know when a book differs."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        b = book_at(conn, ticker, now_us() + 3_600_000_000)
        snaps = conn.execute("SELECT snapshot_ts, source, cut_kind, cut_ts FROM orderbook_snapshots "
                             "WHERE ticker = %s ORDER BY snapshot_ts DESC LIMIT 6", (ticker,)).fetchall()
    return (f"snapshot {b.snapshot_source}@{b.snapshot_ts} cut={b.cut}@{b.cut_ts} "
            f"deltas={b.deltas_applied} reasons={list(b.reasons)}; newest snapshots {snaps}")


def db_trade_ids(dsn: str) -> tuple[set[str], int]:
    """(distinct trade ids, total rows) in the trades table."""
    rows = query(dsn, "SELECT trade_id::text FROM trades")
    return {r[0] for r in rows}, len(rows)


async def assert_complete(sim: Any, dsn: str, *, books: bool = True, timeout: float = 25.0) -> dict[str, Any]:
    """Stop the simulator's activity, then wait until the database holds every truth trade
    exactly once (nothing invented) and, with ``books``, every open market's book rebuilt from
    the DB equals the simulator's true book. Returns a summary for further assertions."""
    sim.set_rate(0.0)
    await asyncio.sleep(0.3)
    truth = truth_trade_ids(sim)
    assert truth, "the simulator produced no trades: the test proves nothing"

    def trades_done() -> bool:
        ids, n = db_trade_ids(dsn)
        return ids == truth and n == len(ids)

    try:
        await wait_for(lambda: asyncio.to_thread(trades_done), timeout, "every truth trade in the DB",
                       step=0.5)
    except AssertionError:
        ids, n = db_trade_ids(dsn)
        missing, extra = truth - ids, ids - truth
        when = sorted(t["ts_us"] for t in sim.truth.trades() if t["trade_id"] in missing)
        raise AssertionError(f"trades: {len(missing)} missing, {len(extra)} invented, "
                             f"{n - len(ids)} duplicated (truth {len(truth)}); missing exchange "
                             f"times {when[:3]}..{when[-3:]}, now {now_us()}") from None
    summary: dict[str, Any] = {"trades": len(truth)}
    if books:
        tickers = sim.market_tickers(status="active", limit=10_000)

        def books_done() -> list[str]:
            return [t for t in tickers if rebuild_book(dsn, t) != sim.true_book(t)]

        bad: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            bad = await asyncio.to_thread(books_done)
            if not bad:
                break
            await asyncio.sleep(0.5)
        assert not bad, (f"{len(bad)} of {len(tickers)} books differ from the simulator, e.g. {bad[0]}: "
                         f"db={rebuild_book(dsn, bad[0])} true={sim.true_book(bad[0])}; "
                         f"rebuilt from {_how_rebuilt(dsn, bad[0])}")
        summary["books"] = len(tickers)
    return summary


def metric(app: Any, name: str, **labels: str) -> float:
    v = app.prom.get_sample_value(name, labels or None)
    return 0.0 if v is None else float(v)


def env_without_pg() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}


def metric_sum(app: Any, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for fam in app.prom.collect():
        for smp in fam.samples:
            if smp.name == name and all(smp.labels.get(k) == v for k, v in labels.items()):
                total += smp.value
    return total

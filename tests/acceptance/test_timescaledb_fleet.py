"""The acceptance run on TimescaleDB gatherers: the whole fleet as real processes (simulator, three
gatherers whose PostgreSQL preloads TimescaleDB and stores the event tables as hypertables,
deduplicator, native production), a short clean run, then ``kalshi_data.verify`` against the
simulator's ground truth must find nothing missing, duplicated or invented.

Chaos is test_zero_loss.py's job (on native gatherers); this run proves the TimescaleDB schema end
to end under the real writers, reader and merge.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from kalshi_data.fleet import Fleet, find_leftovers, make_plan
from kalshi_data.fleet.info import database_dsns
from kalshi_data.verify import verify
from shared.config import Environment

US = 1_000_000
EVENT_TABLES = ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers")


def _one(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row and row[0] is not None else 0


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.timeout(480)
def test_timescaledb_gatherers_lose_nothing(open_workdir: Path) -> None:
    plan = make_plan(open_workdir, preset="tiny", fast_pg=True, storage="timescaledb")
    markers: list[str] = [str(open_workdir)]
    since = time.time_ns() // 1000 - 60 * US
    try:
        with Fleet(plan, Environment.from_os().env, ready_timeout=180) as fleet:
            info = fleet.start()
            markers += fleet.markers()
            prod, gatherers = database_dsns(info)
            for name, dsn in gatherers.items():
                assert info["databases"][name]["storage"] == "timescaledb"
                assert _one(dsn, "SELECT count(*) FROM gatherer_meta WHERE storage = 'timescaledb'") == 1, name
                assert _one(dsn, "SELECT count(*) FROM timescaledb_information.hypertables") == 4, name
            assert info["databases"]["production"]["storage"] == "native"

            def production_holds(n: int) -> bool:
                return all(_one(prod, f"SELECT count(*) FROM {t}") >= n for t in
                           ("trades", "orderbook_deltas", "orderbook_snapshots"))

            _wait(lambda: production_holds(1), 120, "production to hold trades, deltas and snapshots")
            _wait(lambda: production_holds(50), 120, "50 rows of each in production")
            # books are compared TAIL_US before the end: the run must reach well past the first
            # WebSocket snapshots (a quiet machine gets 50 rows in a second or two)
            _wait(lambda: _one(prod, "SELECT (SELECT max(exchange_ts) FROM orderbook_deltas) - (SELECT "
                               "min(snapshot_ts) FROM orderbook_snapshots WHERE source <> 'rest')") > 15 * US,
                  120, "15 s of deltas after the first WebSocket snapshot")
            for name, dsn in gatherers.items():  # the rows really are in chunks of the hypertables
                for table in EVENT_TABLES:
                    assert _one(dsn, f"SELECT count(*) FROM show_chunks('{table}')") >= 1, (name, table)

            # stop the gatherers cleanly (they flush on SIGTERM), then everything they hold is merged
            for g in plan.gatherers:
                assert fleet.stop_process(g.name) is None, f"{g.name} did not stop cleanly"
            assert fleet.wait_merged(120), "deduplicator did not merge everything the gatherers hold"
            report = verify(prod, gatherers, since_us=since, until_us=time.time_ns() // 1000 + 60 * US,
                            truth=info["simulator"]["truth"])
            print("\n".join(report.info), flush=True)
            assert report.ok, "\n".join(str(p) for p in report.problems)
            # the truth really was compared: trades and deltas over a span, and books rebuilt
            assert any(line.startswith("truth window ") for line in report.info), report.info
            assert any(line.startswith("books: ") and not line.startswith("books: 0 ") for line in report.info), \
                report.info
            assert fleet.stop() == []
    finally:
        leftovers = find_leftovers(markers)
    assert leftovers == [], f"processes of {open_workdir} still running: {leftovers}"

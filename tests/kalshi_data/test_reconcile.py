"""``kalshi-data reconcile`` against one real fleet (simulator, two gatherers, deduplicator,
real PostgreSQL): trades the simulator withholds from every socket and keeps off the recent
window of ``/markets/trades`` (so the gatherers' backfill sweeps miss them too) are found by the
reconciliation, backfilled through a gatherer's admin API, and end up in production exactly
once; a mismatched trade is reported and left alone; an interrupted run resumes; a second run
finds nothing missing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import yaml

from kalshi_data.__main__ import main
from kalshi_data.fleet import Fleet, find_leftovers, make_plan
from kalshi_data.reconcile import day_start_s
from shared.config import Environment

US = 1_000_000
REST_LAG_S = 25  # longer than a backfill sweep's reach (15 s interval + 1 s overlap)
SETTLE = "60s"
WITHHELD = 3


def withheld_trades(truth: Path) -> dict[str, int]:
    """trade id -> trade number of every trade the simulator kept from the sockets (its truth log)."""
    out = {}
    for line in truth.read_bytes().split(b"\n"):
        if b'"withheld"' in line:
            try:
                r = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the line being written
            if r.get("what") == "trade" and r.get("trade_id"):
                out[str(r["trade_id"])] = int(r["n"])
    return out


def wait_for(cond: Callable[[], Any], what: str, timeout: float = 120.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, Any]]:
    # The test compares today's trades: keep clear of midnight UTC (the day would change under it).
    now = datetime.now(UTC)
    if now.hour == 23 and now.minute >= 50:
        time.sleep((60 - now.minute) * 60 - now.second + 5)
    workdir = Path(tempfile.mkdtemp(prefix="kalshi-reconcile-"))
    os.chmod(workdir, 0o755)
    markers = [str(workdir)]
    try:
        plan = make_plan(workdir, preset="tiny", fast_pg=True, n_gatherers=2)
        with Fleet(plan, Environment.from_os().env, ready_timeout=180) as f:
            info = f.start()
            markers = [*f.markers(), str(workdir)]
            info["workdir"] = str(workdir)
            yield info
            assert f.stop() == []
        assert find_leftovers(markers) == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _slow_config(info: dict[str, Any], path: Path) -> Path:
    """gatherer-1's YAML with a small REST budget (2 requests/s) for the reconcile."""
    doc = yaml.safe_load(Path(info["processes"]["gatherer-1"]["config"]).read_text())
    doc["rate_limit"] = {**doc.get("rate_limit", {}), "read_per_s": 20, "read_capacity": 20}
    path.write_text(yaml.safe_dump(doc))
    return path


def _slice_for_today() -> str:
    """A slice giving the run at least six slices so far today (to interrupt it half-way)."""
    now = datetime.now(UTC)
    elapsed = now.hour * 3600 + now.minute * 60 + now.second
    return next(f"{s}s" for s in (3600, 600, 60, 10) if elapsed // s >= 6)


def test_reconcile_finds_fixes_reports_and_resumes(fleet: dict[str, Any], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    info = fleet
    prod = info["databases"]["production"]["dsn"]
    truth = Path(info["simulator"]["truth"])
    control = info["simulator"]["control_url"]
    fleet_json = str(Path(info["workdir"]) / "fleet.json")
    day = datetime.now(UTC).date().isoformat()

    # 1. withhold trades from every socket and from the recent window of /markets/trades
    r = httpx.post(f"{control}/faults/withhold_next", json={"kind": "trade", "n": WITHHELD,
                                                           "rest_lag_s": REST_LAG_S}, timeout=10)
    assert r.status_code == 200, r.text
    hidden = wait_for(lambda: (w := withheld_trades(truth)) and len(w) >= WITHHELD and w, "withheld trades")
    ids = sorted(hidden)
    # the trades' exchange times, from the truth log
    times = {rec["trade_id"]: _ts(rec) for rec in _truth_trades(truth) if rec.get("trade_id") in hidden}
    assert set(times) == set(ids)
    # wait until the sweeps that could have seen them are over and they are past --settle
    wait_for(lambda: time.time() * US > max(times.values()) + (60 + 5) * US, "the withheld trades to settle",
             timeout=180, every=1.0)
    with psycopg.connect(prod, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM trade_ids WHERE trade_id = ANY(%s::uuid[])",
                            (ids,)).fetchone() == (0,), "a gatherer caught a withheld trade: the fault is broken"
        # 2. a mismatch: one merged trade's count differs from Kalshi's
        bad = conn.execute("SELECT trade_id::text, count FROM trades WHERE exchange_ts < %s "
                           "ORDER BY exchange_ts DESC LIMIT 1", (int(time.time() * US) - 65 * US,)).fetchone()
        assert bad is not None
        conn.execute("UPDATE trades SET count = count + 100 WHERE trade_id = %s", (bad[0],))

    # 3. a run interrupted half-way (SIGKILL after its first slices), then resumed
    cfg = _slow_config(info, tmp_path / "reconcile-gatherer.yaml")
    slice_ = _slice_for_today()
    metrics = tmp_path / "reconcile.prom"
    common = ["--dsn", prod, "--gatherer-config", cfg, "--gatherer-config",
              info["processes"]["gatherer-2"]["config"], "--settle", SETTLE, "--slice", slice_,
              "--fix-timeout", "120s", "--metrics-file", str(metrics)]
    common = [str(c) for c in common]
    proc = subprocess.Popen([sys.executable, "-m", "kalshi_data", "reconcile", "--day", day, *common],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def progress() -> tuple[int, int, int] | None:
            with psycopg.connect(prod, autocommit=True) as c:
                row = c.execute("SELECT run_id, slices_done, slices_total FROM reconcile_runs WHERE day = %s "
                                "ORDER BY run_id DESC LIMIT 1", (day,)).fetchone()
            return row if row and row[1] >= 2 else None
        run_id, done, total = wait_for(progress, "the first run's first slices", every=0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(30)
    assert done < total, "the run finished before it could be interrupted"
    with psycopg.connect(prod, autocommit=True) as conn:
        assert conn.execute("SELECT finished FROM reconcile_runs WHERE run_id = %s", (run_id,)).fetchone() == (None,)

    rc = main(["reconcile", "--day", day, *common])
    out = capsys.readouterr().out
    assert f"resuming run {run_id} at slice" in out, out
    assert rc == 1, out  # the mismatch is a difference
    with psycopg.connect(prod, autocommit=True) as conn:
        row = conn.execute("SELECT finished IS NOT NULL, kalshi_trades, production_trades, missing, fixed, extra, "
                           "mismatched, slices_done, slices_total, window_end FROM reconcile_runs "
                           "WHERE run_id = %s", (run_id,)).fetchone()
        assert row is not None
        finished, kalshi, production, missing, fixed, extra, mismatched, sdone, stotal, wend = row
        assert finished and sdone == stotal
        assert (missing, fixed, extra, mismatched) == (WITHHELD, WITHHELD, 0, 1), row
        # Kalshi's count is the simulator's truth for the window; production now holds them all
        t0 = day_start_s(datetime.now(UTC).date()) * US
        truth_n = sum(1 for rec in _truth_trades(truth) if t0 <= _ts(rec) < wend)
        assert kalshi == truth_n and production == kalshi - WITHHELD
        diffs = conn.execute("SELECT trade_id::text, kind, fixed FROM reconcile_trades WHERE run_id = %s "
                             "ORDER BY kind, trade_id", (run_id,)).fetchall()
        assert diffs == [*[(i, "mismatched", False) for i in [bad[0]]], *[(i, "missing", True) for i in ids]]
        # exactly once each, through a gatherer (its database has them) and the deduplicator
        assert conn.execute("SELECT count(*), count(DISTINCT trade_id) FROM trades WHERE trade_id = ANY(%s::uuid[])",
                            (ids,)).fetchone() == (WITHHELD, WITHHELD)
        assert conn.execute("SELECT count(*) FROM trades WHERE trade_id = %s", (bad[0],)).fetchone() == (1,)
        # the mismatch is reported, never overwritten
        assert conn.execute("SELECT count FROM trades WHERE trade_id = %s", (bad[0],)).fetchone() == (bad[1] + 100,)
    g_rows = 0
    for g in ("gatherer-1", "gatherer-2"):
        with psycopg.connect(info["databases"][g]["dsn"], autocommit=True) as c:
            g_rows += c.execute("SELECT count(*) FROM trades WHERE trade_id = ANY(%s::uuid[]) AND source = 'rest'",
                                (ids,)).fetchone()[0]
    assert g_rows >= WITHHELD
    text = metrics.read_text()
    assert "reconcile_missing_trades 0.0" in text and "reconcile_last_success_timestamp" in text

    # 4. a second run: nothing missing, the mismatch still reported
    rc = main(["reconcile", "--day", day, *common])
    out = capsys.readouterr().out
    assert rc == 1 and "missing 0 (fixed 0, still missing 0)" in out and "mismatched 1" in out, out

    # 5. gaps shows the day's reconciliation
    ticker = conn_ticker(prod, ids[0])
    assert main(["gaps", "--ticker", ticker, "--dsn", prod, "--since", "2h"]) == 0
    out = capsys.readouterr().out
    assert f"reconcile {day}:" in out and "missing 0" in out, out

    # 6. --fleet takes everything from fleet.json; a run already going holds the day
    assert main(["reconcile", "--day", "yesterday", "--fleet", fleet_json, "--no-fix"]) == 0
    assert "kalshi 0 trade(s), production 0" in capsys.readouterr().out


def _truth_trades(truth: Path) -> list[dict[str, Any]]:
    out = []
    for line in truth.read_bytes().split(b"\n"):
        if b'"trade"' in line and b'"withheld"' not in line:
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # the line being written
            if rec.get("k") == "trade":
                out.append(rec)
    return out


def _ts(rec: dict[str, Any]) -> int:
    """Kalshi's REST time of a truth trade, at the millisecond precision the API gives."""
    return int(rec["rest_ts_us"]) // 1000 * 1000


def conn_ticker(dsn: str, trade_id: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT ticker FROM trades WHERE trade_id = %s", (trade_id,)).fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize(("argv", "expect"), [
    (["--day", "2026-13-01", "--dsn", "x"], "not a day: '2026-13-01'"),
    (["--day", "today", "--dsn", "x", "--slice", "7s", "--gatherer-config", "x"], "--slice 7s must be"),
    (["--since", "today", "--dsn", "x"], "--since today must be before today"),
    (["--day", "yesterday", "--dsn", "x"], "no Kalshi key"),
    (["--day", "yesterday", "--gatherer-config", "/nonexistent.yaml"], "no production database"),
])
def test_bad_input_one_line(argv: list[str], expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reconcile", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kalshi-data reconcile: ") and expect in err[0], err

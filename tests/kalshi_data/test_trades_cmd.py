"""``kalshi-data trades`` on production filled from a real simulator run: every truth trade of the
range exactly once, in every format, by market, series and event."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kalshi_data.__main__ import main
from tests.fix_db import role_dsn
from tests.kalshi_data.simdata import US, SimProduction


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["trades", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_trades_of_a_market_series_and_event(sim_production: SimProduction, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    p = sim_production
    dsn = ["--dsn", role_dsn(p.dsn, "analyst")]
    lo, hi = p.start_us + 60 * US, p.start_us + 300 * US
    ticker = p.busiest(1)[0]
    rc, out, err = _run(capsys, ticker, "--from", str(lo), "--to", str(hi), *dsn)
    rows = list(csv.DictReader(io.StringIO(out)))
    want = sorted((t[0], t[2]) for t in p.trades if t[1] == ticker and lo <= t[2] < hi)
    assert rc == 0 and len(want) > 20 and sorted((r["trade_id"], int(r["exchange_ts"])) for r in rows) == want
    assert err == f"kalshi-data trades: {len(want):,} trade(s) from " + err.split(" from ", 1)[1]
    assert [int(r["exchange_ts"]) for r in rows] == sorted(int(r["exchange_ts"]) for r in rows)
    by_id = {t[0]: t for t in p.trades}
    for r in rows:
        t = by_id[r["trade_id"]]
        assert (int(r["yes_price"]), int(r["count"]), r["taker_side"]) == (t[3], t[4], t[5])

    series = p.markets[ticker].series_ticker
    assert series is not None
    out_file = tmp_path / "series.parquet"
    rc, _, err = _run(capsys, "--series", series, "--from", str(lo), "--to", str(hi), "--format", "parquet",
                      "--output", str(out_file), *dsn)
    got = pq.read_table(out_file).column("trade_id").to_pylist()
    want_ids = {t[0] for t in p.trades if lo <= t[2] < hi and p.markets[t[1]].series_ticker == series}
    assert rc == 0 and len(got) == len(want_ids) and set(got) == want_ids, err

    event = p.markets[ticker].event_ticker
    rc, out, _ = _run(capsys, "--event", str(event), "--from", str(lo), "--to", str(hi), "--format", "json", *dsn)
    got_json = [json.loads(line) for line in out.splitlines()]
    want_ids = {t[0] for t in p.trades if lo <= t[2] < hi and p.markets[t[1]].event_ticker == event}
    assert rc == 0 and {d["trade_id"] for d in got_json} == want_ids and len(got_json) == len(want_ids)

    rc, out, err = _run(capsys, "--from", str(lo), "--to", str(hi), "--progress", *dsn)
    assert rc == 0 and len(out.splitlines()) - 1 == sum(1 for t in p.trades if lo <= t[2] < hi)
    assert "rows/s" in err and "ETA" in err  # the bar, drawn because it was asked for

    rc, _, err = _run(capsys, "--from", str(hi), "--to", str(lo), *dsn)
    assert rc == 2 and err.count("\n") == 1 and "is not before" in err
    rc, _, err = _run(capsys, "--from", "1h", "--format", "parquet", *dsn)
    assert rc == 2 and err == "kalshi-data trades: --format parquet needs --output FILE\n"

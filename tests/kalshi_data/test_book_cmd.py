"""``kalshi-data book`` on production filled from a real simulator run, checked against the
simulator's own books (its ground truth), as the read-only analyst role."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from kalshi_data.__main__ import main
from kalshi_data.verify import fmt_us
from tests.fix_db import role_dsn
from tests.kalshi_data.simdata import US, SimProduction


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["book", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _dsn(p: SimProduction) -> list[str]:
    return ["--dsn", role_dsn(p.dsn, "analyst")]


def test_book_at_an_instant_is_the_exchanges_book(sim_production: SimProduction,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    p = sim_production
    checked = 0
    for ticker in p.busiest(3):
        for k in range(1, 8):
            at = p.start_us + k * 50 * US + 123_456  # mid-millisecond instants too
            if p.lost[0] - US <= at <= p.lost[1]:
                continue
            rc, out, err = _run(capsys, ticker, "--at", str(at), "--format", "json", *_dsn(p))
            assert rc == 0, err
            doc = json.loads(out)
            want = p.truth_book(ticker, at)
            assert (doc["yes"], doc["no"]) == ([list(x) for x in want[0]], [list(x) for x in want[1]])
            assert doc["uncertain"] is False and doc["snapshot_ts"] is not None
            checked += 1
    assert checked >= 15
    # the table, for people: best bids first, in dollars and contracts
    ticker = p.busiest(1)[0]
    at = p.start_us + 100 * US
    rc, out, _ = _run(capsys, ticker, "--at", fmt_us(at), "--depth", "2", *_dsn(p))
    yes, no = p.truth_book(ticker, at)
    assert rc == 0 and out.startswith(f"{ticker} order book at {fmt_us(at)}")
    best = yes[-1]
    assert f"{best[0] / 10_000:>8.4f} {best[1] / 100:>13,.2f}" in out.splitlines()[3]
    assert len([ln for ln in out.splitlines() if ln.startswith("  ") and "." in ln[:12]]) <= 2
    rc, out, _ = _run(capsys, ticker, "--at", str(at), "--format", "csv", "--depth", "1", *_dsn(p))
    rows = list(csv.DictReader(io.StringIO(out)))
    want = [(side, *levels[-1]) for side, levels in (("yes", yes), ("no", no)) if levels]
    assert rc == 0 and want and [(r["side"], int(r["price"]), int(r["size"])) for r in rows] == want


def test_an_instant_in_a_lost_window_is_flagged_uncertain(sim_production: SimProduction,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    p = sim_production
    ticker = p.busiest(1)[0]
    rc, out, err = _run(capsys, ticker, "--at", str(p.lost[0] + 5 * US), *_dsn(p))
    assert rc == 3 and "UNCERTAIN: coverage_gap" in out and err.strip() == "kalshi-data book: uncertain: coverage_gap"
    rc, _, err = _run(capsys, "KXNOPE-1", "--at", str(p.end_us), *_dsn(p))
    assert rc == 1 and err.count("\n") == 1 and "no snapshot" in err
    for bad in (["--at", "yesterday-ish"], ["--every", "1m"], ["--at", "now", "--every", "1m"],
                ["--every", "0s", "--from", "1h", "--to", "now"]):
        rc, _, err = _run(capsys, ticker, *bad, *_dsn(p))
        assert rc == 2 and err.count("\n") == 1 and err.startswith("kalshi-data book: "), (bad, err)


def test_a_series_of_books_is_streamed_and_exact(sim_production: SimProduction, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    p = sim_production
    ticker = p.busiest(2)[1]
    out_file = tmp_path / "book.parquet"
    start, end = p.start_us + 30 * US, p.end_us - 5 * US
    rc, out, err = _run(capsys, ticker, "--every", "10s", "--from", str(start), "--to", str(end), "--depth", "3",
                        "--format", "parquet", "--output", str(out_file), *_dsn(p))
    assert rc == 3, err  # the lost window makes a few instants uncertain
    assert out == "" and err.count("\n") == 1 and "uncertain" in err  # no bar when not a terminal
    table = pq.read_table(out_file).to_pylist()
    instants = sorted({r["at_us"] for r in table})
    assert instants == list(range(start, end + 1, 10 * US))
    flagged = 0
    for at in instants:
        rows = [r for r in table if r["at_us"] == at]
        if rows[0]["uncertain"]:
            flagged += 1
            assert "coverage_gap" in rows[0]["reasons"]
            assert p.lost[0] - US <= at <= p.lost[1] + 10 * US
            continue
        yes, no = p.truth_book(ticker, at)
        got = {(r["side"], r["level"]): (r["price"], r["size"]) for r in rows if r["side"]}
        want = {("yes", i): lvl for i, lvl in enumerate(reversed(yes[-3:]), 1)}
        want |= {("no", i): lvl for i, lvl in enumerate(reversed(no[-3:]), 1)}
        assert got == want, fmt_us(at)
    assert 0 < flagged <= 3
    # with --progress, a bar (rows, rate, ETA) is drawn on stderr
    rc, out, err = _run(capsys, ticker, "--every", "1m", "--from", str(start), "--to", str(start + 4 * 60 * US),
                        "--progress", *_dsn(p))
    assert rc == 0 and "book " + ticker in err and "books/s" in err and "ETA" in err
    assert len(list(csv.DictReader(io.StringIO(out)))) >= 5

"""``kalshi-data verify`` against real PostgreSQL: crafted gatherer and production rows, one test per
problem kind (its one line and exit code), and a clean dataset that passes."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from kalshi_data.__main__ import main
from kalshi_data.verify import Report, parse_time
from shared.pgcluster import PgCluster
from tests.fix_db import fresh_database
from tests.kalshi_data.rows import US, Data, _now_us


@pytest.fixture
def data(pg_cluster: PgCluster) -> Data:
    prod = fresh_database(pg_cluster, "production")
    gatherers = {f"gatherer-{i}": fresh_database(pg_cluster, "gatherer") for i in (1, 2)}
    return Data(prod, gatherers)


def _clean(d: Data) -> None:
    """Both gatherers saw the same two trades, deltas, a snapshot and a recovered gap; all merged."""
    t = d.t0
    ids = [str(uuid.uuid4()) for _ in range(2)]
    events = {}
    for g in d.gatherers:
        d.trade(g, ids[0], "KX-A", t)
        d.trade(g, ids[1], "KX-A", t + 30 * US)
        d.snapshot(g, "KX-A", t - 1000, [[5000, 100]], [[4000, 200]], None)
        d.delta(g, "KX-A", t + 1000, "yes", 5000, 50)
        events[g] = d.coverage(g, g, "KX-A", "seq_gap", t + 2000, t + 3000, True)
        d.merge_all(g)
    d.trade("production", ids[0], "KX-A", t)
    d.trade("production", ids[1], "KX-A", t + 30 * US)
    for g in d.gatherers:
        d.snapshot("production", "KX-A", t - 1000, [[5000, 100]], [[4000, 200]], None, gatherer=g)
        d.coverage("production", g, "KX-A", "seq_gap", t + 2000, t + 3000, True, event_id=events[g])
    d.delta("production", "KX-A", t + 1000, "yes", 5000, 50)


def test_clean_dataset_passes(data: Data) -> None:
    _clean(data)
    report = data.run()
    assert report.ok, report.problems
    assert any(line.startswith("counts trades: production=2 gatherer-1=2 gatherer-2=2") for line in report.info)
    assert any("coverage gatherer-1: seq_gap recovered x1" in line for line in report.info)


def test_missing_merged_row_is_reported(data: Data) -> None:
    _clean(data)
    lost = str(uuid.uuid4())
    data.trade("gatherer-2", lost, "KX-B", data.t0 + 40 * US)
    data.merge_all("gatherer-2")  # the cursor claims it merged the trade, production lacks it
    report = data.run()
    assert report.kinds() == {"missing"}
    [p] = report.problems
    assert str(p).startswith("missing: trades: 1 row(s) merged from gatherer-2")
    assert lost in p.text


def test_missing_delta_is_reported(data: Data) -> None:
    _clean(data)
    data.delta("gatherer-1", "KX-A", data.t0 + 5000, "no", 4000, -100)
    data.merge_all("gatherer-1")
    report = data.run()
    assert [p.kind for p in report.problems] == ["missing"]
    assert "orderbook_deltas: 1 row(s) merged from gatherer-1" in report.problems[0].text


def test_duplicate_trade_id_is_reported(data: Data) -> None:
    _clean(data)
    dup = str(uuid.uuid4())
    data.trade("production", dup, "KX-A", data.t0 + 10 * US)
    data.trade("production", dup, "KX-A", data.t0 + 10 * US + 1000)  # same trade, another timestamp
    report = data.run()
    assert [p.kind for p in report.problems] == ["duplicate"]
    assert f"trades in production: trade_id {dup} (KX-A) stored 2 times" in report.problems[0].text


def test_trade_gap_is_reported(data: Data) -> None:
    _clean(data)  # trades at t0 and t0+30 s
    report = data.run(max_gap_s=20.0)
    assert [p.kind for p in report.problems] == ["trade_gap"]
    assert "(30s > --max-gap 20s)" in report.problems[0].text
    assert any(line.startswith("largest per-market trade gaps: KX-A 30.0s") for line in report.info)


def test_old_backlog_is_reported_and_fresh_backlog_is_not(data: Data) -> None:
    _clean(data)
    data.trade("gatherer-1", str(uuid.uuid4()), "KX-A", data.t0 + 50 * US, received_at=_now_us())
    assert data.run().ok  # fresh: just lag
    data.trade("gatherer-1", str(uuid.uuid4()), "KX-A", data.t0 + 51 * US, received_at=_now_us() - 300 * US)
    report = data.run()
    assert [p.kind for p in report.problems] == ["backlog"]
    assert report.problems[0].text.startswith("gatherer-1.trades: 2 unmerged row(s) past cursor")
    assert any(line == "backlog gatherer-1: trades=2" for line in report.info)


def test_cursor_of_another_database_is_reported(data: Data) -> None:
    _clean(data)
    with data.conn("gatherer-2") as c:
        c.execute("UPDATE gatherer_meta SET db_uuid = gen_random_uuid()")  # restored from elsewhere
    report = data.run()
    assert [p.kind for p in report.problems] == ["cursor"]
    assert "--reset-cursor gatherer-2" in report.problems[0].text


def test_window_lost_by_every_gatherer_is_reported(data: Data) -> None:
    _clean(data)
    t = data.t0
    # gatherer-1 lost KX-A for 10 s, gatherer-2 lost everything for an overlapping 5 s
    data.coverage("production", "gatherer-1", "KX-A", "seq_gap", t + 100 * US, t + 110 * US, False)
    data.coverage("production", "gatherer-2", None, "process_down", t + 105 * US, t + 120 * US, False, scope="process")
    report = data.run()
    assert [p.kind for p in report.problems] == ["unrecovered"]
    assert report.problems[0].text.startswith("KX-A: ")
    # in exchange time: each gatherer's window mapped with its observed offset (+ a little slack)
    assert re.search(r"\((5\.\d)s\): every gatherer \(gatherer-1, gatherer-2\) reports it lost",
                     report.problems[0].text), report.problems[0].text
    # one gatherer losing data that the other holds is not a problem
    data2 = Data(data.production, data.gatherers)
    with data.conn("production") as c:
        c.execute("DELETE FROM coverage_events WHERE gatherer_id = 'gatherer-2' AND NOT recovered")
    assert data2.run().ok
    assert any("seq_gap UNRECOVERED x1" in line for line in data2.run().info)


def _truth(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in
                              [{"k": "header", "version": 1, "seed": 1, "preset": "tiny"}, *records])
                     + b'{"k":"trade","n":9')  # a half-written last line, as from a running simulator
    return path


def _truth_case(d: Data, tmp_path: Path) -> tuple[Path, list[str]]:
    """Truth: book0 of KX-T, three deltas, two trades. Production holds exactly that."""
    t = d.t0
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    recs: list[dict[str, Any]] = [
        {"k": "book0", "ticker": "KX-T", "yes": [[5000, 100]], "no": [[4000, 200]]},
        {"k": "delta", "n": 0, "ts_us": t + 1000, "ts_ms": (t + 1000) // 1000, "ticker": "KX-T", "side": "yes",
         "price": 5000, "delta": 50},
        {"k": "delta", "n": 1, "ts_us": t + 2_000_000, "ts_ms": (t + 2_000_000) // 1000, "ticker": "KX-T",
         "side": "no", "price": 4000, "delta": -200},
        {"k": "delta", "n": 2, "ts_us": t + 3_000_000, "ts_ms": (t + 3_000_000) // 1000, "ticker": "KX-T",
         "side": "yes", "price": 5100, "delta": 10},
    ]
    for i, tid in enumerate(ids):
        ts = t + (4 + i) * US
        recs.append({"k": "trade", "n": i, "ts_us": ts + 123, "ts_ms": ts // 1000, "rest_ts_us": ts + 123,
                     "trade_id": tid, "ticker": "KX-T", "yes_price": 5600, "no_price": 4400, "count": 100,
                     "taker_side": "yes"})
    # production: delta 0 and a snapshot placed right after it, then deltas 1 and 2, both trades
    d.delta("production", "KX-T", t + 1000, "yes", 5000, 50)
    d.snapshot("production", "KX-T", t + 1500, [[5000, 150]], [[4000, 200]], t + 1000,
               cut=("last", t + 1000, "yes", 5000, 50, 0))
    d.delta("production", "KX-T", t + 2_000_000, "no", 4000, -200)
    d.delta("production", "KX-T", t + 3_000_000, "yes", 5100, 10)
    for i, tid in enumerate(ids):
        d.trade("production", tid, "KX-T", t + (4 + i) * US)
    return _truth(tmp_path / "truth.jsonl", recs), ids


def _truth_run(d: Data, path: Path) -> Report:
    prod_only = Data(d.production, {})
    prod_only.t0 = d.t0
    return prod_only.run(truth=path, explicit_truth_window=True, since_us=d.t0 - 10 * US, until_us=d.t0 + 60 * US)


def test_truth_clean(data: Data, tmp_path: Path) -> None:
    path, _ids = _truth_case(data, tmp_path)
    report = _truth_run(data, path)
    assert report.ok, report.problems
    assert "books: 1 market(s) rebuilt and compared" in report.info


def test_truth_missing_extra_mismatch(data: Data, tmp_path: Path) -> None:
    path, ids = _truth_case(data, tmp_path)
    with data.conn("production") as c:
        c.execute("DELETE FROM trades WHERE trade_id = %s", (ids[0],))
        c.execute("UPDATE trades SET count = 300 WHERE trade_id = %s", (ids[1],))
    data.trade("production", str(uuid.uuid4()), "KX-T", data.t0 + 7 * US)  # invented
    report = _truth_run(data, path)
    assert sorted(p.kind for p in report.problems) == ["truth_extra", "truth_mismatch", "truth_missing"]
    by = {p.kind: p.text for p in report.problems}
    assert by["truth_missing"].startswith(f"trade {ids[0]} (KX-T at ")
    assert by["truth_mismatch"] == f"trade {ids[1]}: production differs from the truth: count 300 != 100"
    assert "is in production but not in the truth" in by["truth_extra"]


def test_truth_missing_delta_and_wrong_book(data: Data, tmp_path: Path) -> None:
    path, _ids = _truth_case(data, tmp_path)
    with data.conn("production") as c:
        c.execute("DELETE FROM orderbook_deltas WHERE price = 5100")
    report = _truth_run(data, path)
    assert sorted(p.kind for p in report.problems) == ["truth_book", "truth_missing"]
    by = {p.kind: p.text for p in report.problems}
    assert by["truth_missing"].startswith("delta KX-T ") and "yes 5100 +10: truth has 1, production 0" in by["truth_missing"]
    assert by["truth_book"].startswith("KX-T: book rebuilt from production") and "5100: 0 vs 10" in by["truth_book"]


def test_truth_delta_in_unrecovered_window_may_be_missing(data: Data, tmp_path: Path) -> None:
    path, _ids = _truth_case(data, tmp_path)
    with data.conn("production") as c:
        c.execute("DELETE FROM orderbook_deltas WHERE price = 5100")
    t = data.t0
    data.coverage("production", "gatherer-1", "KX-T", "seq_gap", t + 2_500_000, t + 3_500_000, False)
    # a later resync snapshot restores the book
    data.snapshot("production", "KX-T", t + 3_600_000, [[5000, 150], [5100, 10]], [], t + 3_000_000)
    report = _truth_run(data, path)
    assert report.ok, report.problems


def test_cli_exit_codes_and_one_line_per_problem(data: Data, capsys: pytest.CaptureFixture[str]) -> None:
    _clean(data)
    dup = str(uuid.uuid4())
    data.trade("production", dup, "KX-A", data.t0 + 10 * US)
    data.trade("production", dup, "KX-A", data.t0 + 10 * US + 1000)
    args = ["verify", "--production", data.production, "--since", str(data.t0 - 60 * US),
            "--until", str(data.t0 + 600 * US), "--max-gap", "3600"]
    for name, dsn in data.gatherers.items():
        args += ["--gatherer", f"{name}={dsn}"]
    assert main(args) == 1
    out = capsys.readouterr().out.splitlines()
    assert [ln for ln in out if ln.startswith("duplicate: ")] == [
        next(ln for ln in out if ln.startswith("duplicate: "))]
    assert out[-1] == "verify: 1 problem(s)"
    with data.conn("production") as c:
        c.execute("DELETE FROM trades WHERE trade_id = %s AND exchange_ts = %s", (dup, data.t0 + 10 * US + 1000))
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines() == ["verify: OK"]


def test_cli_unreachable_database_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.pgcluster import free_port

    assert main(["verify", "--production", f"host=127.0.0.1 port={free_port()} dbname=x user=x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kalshi-data verify: production: cannot connect")


def test_parse_time() -> None:
    now = 1_800_000_000 * US
    assert parse_time("now", now) == now
    assert parse_time("1h", now) == now - 3600 * US
    assert parse_time("90s", now) == now - 90 * US
    assert parse_time("2026-01-01T00:00:00Z", now) == parse_time("2026-01-01T00:00", now) == 1_767_225_600 * US
    assert parse_time("1767225600", now) == parse_time("1767225600000", now) == 1_767_225_600 * US
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday", now)


def test_truth_delta_lost_by_every_orderbook_stream_is_explained(data: Data, tmp_path: Path) -> None:
    """A dropped orderbook socket gets a fresh snapshot, but the deltas sent while it was down
    exist nowhere, and its ledger says so (unrecovered): missing is fine when every gatherer's
    ledger admits it, a ledger_silent_loss when one gatherer's does not."""
    path, _ids = _truth_case(data, tmp_path)
    with data.conn("production") as c:
        c.execute("DELETE FROM orderbook_deltas WHERE price = 5100")
    t = data.t0
    data.snapshot("production", "KX-T", t + 3_600_000, [[5000, 150], [5100, 10]], [], t + 3_000_000)
    with data.conn("production") as c:
        c.execute("UPDATE orderbook_snapshots SET gatherer_id = 'gatherer-2' WHERE snapshot_ts = %s", (t + 3_600_000,))
    ws_down = {"scope": "connection", "detail": {"role": "orderbook"}}
    data.coverage("production", "gatherer-1", None, "ws_down", t + 2_900_000, t + 3_300_000, False, **ws_down)
    report = _truth_run(data, path)
    assert report.ok, report.problems  # a declared loss: counted, not a lie of the ledger
    assert any("of which 0 trade(s) and 1 delta(s) lie in windows every gatherer calls unrecovered" in ln
               for ln in report.info), report.info
    data.coverage("production", "gatherer-2", None, "ws_down", t + 4_500_000, t + 4_800_000, False, **ws_down)
    report = _truth_run(data, path)  # gatherer-2 was up when the delta was sent, and says so
    by = {p.kind: p.text for p in report.problems}
    assert sorted(by) == ["ledger_silent_loss", "truth_book"], report.problems
    assert "delta KX-T " in by["ledger_silent_loss"] and "gatherer-2" in by["ledger_silent_loss"]
    # ... so the book rebuilt from production lacks it too (the later snapshot has no recorded
    # place in the stream, so it cannot stand in for the lost delta)
    assert "5100: 0 vs 10" in by["truth_book"]


def test_ledger_checked_against_the_truth_both_ways(data: Data, tmp_path: Path) -> None:
    """A window called recovered must be complete; a row production lacks must lie in a window
    every gatherer calls unrecovered."""
    path, ids = _truth_case(data, tmp_path)
    t = data.t0
    # a recovered backfill window that queried the seconds of both trades: fine while they are stored
    ev = data.coverage("production", "gatherer-1", None, "trade_backfill", t + 3 * US, t + 6 * US, True,
                       scope="process", detail={"min_ts": (t + 3 * US) // US, "max_ts": (t + 6 * US) // US})
    assert _truth_run(data, path).ok
    with data.conn("production") as c:
        c.execute("DELETE FROM trades WHERE trade_id = %s", (ids[0],))
    kinds = sorted(p.kind for p in _truth_run(data, path).problems)
    # the trade is missing, the window claiming it recovered lies, and nobody admits the loss
    assert kinds == ["ledger_false_recovered", "ledger_silent_loss", "truth_missing"], kinds
    with data.conn("production") as c:  # the honest ledger: that backfill never completed
        c.execute("UPDATE coverage_events SET recovered = false, detail = '{}' WHERE event_id = %s", (ev,))
    report = _truth_run(data, path)
    assert sorted(p.kind for p in report.problems) == ["truth_missing"], report.problems
    assert any("production lacks 1 truth trade(s) and 0 truth delta(s), of which 1 trade(s)" in ln
               for ln in report.info), report.info
    # a resync called recovered with no snapshot committed at its end
    data.coverage("production", "gatherer-1", "KX-T", "resync", t + 1 * US, t + 1_700_000, True)
    assert "ledger_false_recovered" in {p.kind for p in _truth_run(data, path).problems}

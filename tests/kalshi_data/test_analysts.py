"""docs/analysts.md: every question's SQL (as the analyst role, psql variables bound) and every
``kalshi-data`` command run against production filled from a real simulator run (and its archive
on the moto S3 server), each answer checked against the simulator's own record."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from kalshi_data.__main__ import main
from kalshi_data.archive import TABLES, ExportOptions, export_day
from tests.archive.conftest import (
    fake_aws,
    moto_bucket,
    s3_endpoint,  # noqa: F401 - the session's moto server
)
from tests.fix_db import role_dsn
from tests.kalshi_data.simdata import US, SimProduction

DOC = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"
DAY = "2026-05-28"


def sections() -> dict[int, dict[str, list[str]]]:
    """{question number: {"sql": [blocks], "sh": [blocks]}} from the document."""
    out: dict[int, dict[str, list[str]]] = {}
    for part in re.split(r"^## ", DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)[1:]:
        m = re.match(r"(\d+)\. ", part)
        if not m:
            continue
        blocks: dict[str, list[str]] = defaultdict(list)
        for lang, body in re.findall(r"```(\w+)\n(.*?)```", part, flags=re.DOTALL):
            blocks[lang].append(body)
        out[int(m.group(1))] = blocks
    return out


def statements(block: str) -> list[str]:
    return [s.strip() for s in re.split(r";\s*\n", block) if s.strip() and not s.strip().startswith("--")]


def bind(sql: str) -> str:
    """psql's :'name' -> a psycopg parameter."""
    return re.sub(r":'(\w+)'", r"%(\1)s", sql.rstrip(";"))


def command(block: str, env: dict[str, str]) -> list[str]:
    line = " ".join(ln.strip().rstrip("\\") for ln in block.strip().splitlines())
    line = re.sub(r"\$(\w+)", lambda m: env[m.group(1)], line)
    argv = shlex.split(line)
    assert argv[0] == "kalshi-data"
    return argv[1:]


@pytest.fixture(scope="module")
def archive(sim_production: SimProduction, s3_endpoint: str) -> Iterator[str]:  # noqa: F811
    with moto_bucket(s3_endpoint, "analysts-archive") as store:
        with psycopg.connect(sim_production.dsn, autocommit=True) as conn:
            for name in ("trades", "markets"):  # what the document's archive queries read
                export_day(conn, store, TABLES[name], datetime.fromisoformat(DAY).date(),
                           ExportOptions(allow_empty=True))
        yield "s3://analysts-archive"


def test_every_question_of_the_document_is_answered_right(
        sim_production: SimProduction, archive: str, s3_endpoint: str,  # noqa: F811
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    p = sim_production
    fake_aws(monkeypatch)
    monkeypatch.chdir(tmp_path)
    at = p.start_us + 200 * US + 500_000  # 20:30:00.5Z, before the lost window
    # a busy market still open then, with bids on both sides
    ticker = next(t for t in p.busiest(30) if all(p.truth_book(t, at)) and t in p.markets)
    m = p.markets[ticker]
    at_iso = datetime.fromtimestamp(at / US, UTC)
    assert at < p.lost[0] - US
    variables = {"ticker": ticker, "series": m.series_ticker, "event": m.event_ticker,
                 "day": f"{DAY} 00:00+00", "next_day": "2026-05-29 00:00+00",
                 "at": at_iso.strftime("%Y-%m-%d %H:%M:%S.%f+00")}
    analyst = role_dsn(p.dsn, "analyst")
    env = {"PROD": analyst, "ARCHIVE": archive, "TICKER": ticker,
           "SERIES": str(m.series_ticker), "EVENT": str(m.event_ticker), "DAY": DAY, "NEXT_DAY": "2026-05-29",
           "HOUR": "2026-05-28T20:00", "NEXT_HOUR": "2026-05-28T21:00",
           "AT": at_iso.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
    docs = sections()
    assert sorted(docs) == list(range(1, 11)), sorted(docs)

    day_trades = [t for t in p.trades if p.start_us <= t[2] < p.end_us]
    mine = sorted((t for t in day_trades if t[1] == ticker), key=lambda t: t[2])
    yes_at, no_at = p.truth_book(ticker, at)

    def run_sql(n: int) -> list[list[tuple[Any, ...]]]:
        out = []
        with psycopg.connect(analyst, autocommit=True) as conn:
            conn.execute("SET TimeZone = 'UTC'")
            for block in docs[n]["sql"]:
                for stmt in statements(block):
                    out.append(conn.execute(bind(stmt), variables).fetchall())  # type: ignore[arg-type]
        return out

    def run_cli(n: int) -> tuple[int, str, str]:
        (block,) = docs[n]["sh"]
        argv = command(block, env)
        if argv[0] == "query":  # the archive is on the test's S3-compatible server
            argv += ["--endpoint-url", s3_endpoint]
        rc = main(argv)
        o, e = capsys.readouterr()
        return rc, o, e

    def rows_csv(text: str) -> list[dict[str, str]]:
        return list(csv.DictReader(io.StringIO(text)))

    def q1() -> None:
        (rows,) = run_sql(1)
        assert [r[1] for r in rows] == [__import__("uuid").UUID(t[0]) for t in mine]
        rc, _, err = run_cli(1)
        got = rows_csv(Path("trades.csv").read_text())
        assert rc == 0 and sorted(r["trade_id"] for r in got) == sorted(t[0] for t in mine), err

    def q2() -> None:
        levels, state = run_sql(2)
        want = [("yes", i, *lvl) for i, lvl in enumerate(reversed(yes_at[-5:]), 1)]
        want += [("no", i, *lvl) for i, lvl in enumerate(reversed(no_at[-5:]), 1)]
        assert [r[:4] for r in levels] == want and not any(r[4] for r in levels)
        assert state[0][0] is False and state[0][1] == []
        rc, out, _ = run_cli(2)
        best = [lv[-1] for lv in (yes_at, no_at) if lv]
        assert rc == 0 and best and all(f"{b[0] / 10_000:>8.4f} {b[1] / 100:>13,.2f}" in out for b in best)

    def q3() -> None:
        (rows,) = run_sql(3)
        assert len(rows) >= 5
        for _minute, as_of, yes_bid, yes_ask, _spread in rows:
            y, n = p.truth_book(ticker, int(as_of.timestamp() * US))
            assert int(yes_bid * 10_000) == (y[-1][0] if y else 0)
            assert int(yes_ask * 10_000) == 10_000 - (n[-1][0] if n else 0)
        rc, _, _ = run_cli(3)
        got = rows_csv(Path("spread.csv").read_text())
        assert rc == 3  # the hour starts before the fleet saw the market, and crosses the lost window
        certain = [r for r in got if r["uncertain"] == "False"]
        assert len({r["at_us"] for r in certain}) >= 5
        for r in certain:
            y, n = p.truth_book(ticker, int(r["at_us"]))
            if not r["side"]:  # an empty book marks its instant with one row
                assert not y and not n
                continue
            best = {"yes": y[-1] if y else None, "no": n[-1] if n else None}
            assert best[r["side"]] == (int(r["price"]), int(r["size"]))

    def by_series() -> dict[str, tuple[int, int]]:
        acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for t in day_trades:
            s = str(p.markets[t[1]].series_ticker)
            acc[s][0] += 1
            acc[s][1] += t[4]
        return {s: (a[0], a[1]) for s, a in acc.items()}

    def q4() -> None:
        (rows,) = run_sql(4)
        want = by_series()
        assert {r[0]: (r[1], round(r[2] * 100)) for r in rows} == want
        rc, out, _ = run_cli(4)
        assert rc == 0 and {r["series_ticker"]: (int(r["trades"]), round(float(r["contracts"]) * 100))
                            for r in rows_csv(out)} == want

    def q5() -> None:
        (rows,) = run_sql(5)
        per: Counter[str] = Counter()
        for t in day_trades:
            per[t[1]] += t[4]
        want = sorted(per.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        assert [(r[0], round(r[2] * 100)) for r in rows] == want
        rc, out, _ = run_cli(5)
        assert rc == 0 and [(r["ticker"], round(float(r["contracts"]) * 100)) for r in rows_csv(out)] == want

    def minutes() -> dict[int, list[tuple[Any, ...]]]:
        out: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for t in mine:
            out[t[2] // 60_000_000 * 60_000_000].append(t)
        return out

    def q6() -> None:
        (rows,) = run_sql(6)
        want = minutes()
        assert [int(r[0].timestamp() * US) for r in rows] == sorted(want)
        for r in rows:
            ts = want[int(r[0].timestamp() * US)]
            assert (int(r[2] * 10_000), int(r[3] * 10_000), round(r[5] * 100)) == (
                max(t[3] for t in ts), min(t[3] for t in ts), sum(t[4] for t in ts))
        rc, out, _ = run_cli(6)
        got = rows_csv(out)
        assert rc == 0 and [int(r["minute_us"]) for r in got] == sorted(want)
        for r in got:
            ts = want[int(r["minute_us"])]
            assert (int(r["high"]), int(r["low"]), int(r["count"])) == (
                max(t[3] for t in ts), min(t[3] for t in ts), sum(t[4] for t in ts))

    def q7() -> None:
        (rows,) = run_sql(7)
        want = sorted(t[0] for t in day_trades if p.markets[t[1]].event_ticker == m.event_ticker)
        assert len(rows) == len(want) > 0
        rc, _, _ = run_cli(7)
        assert rc == 0 and sorted(pq.read_table("event.parquet").column("trade_id").to_pylist()) == want

    def q8() -> None:
        events, (windows,) = run_sql(8)
        assert [(r[0], r[1], r[2]) for r in events] == [("gatherer-1", "ws_down", "connection"),
                                                         ("gatherer-2", "ws_down", "connection")]
        assert str(windows[0]).replace(" ", "") == f"{{[{p.lost[0] - US},{p.lost[1] + 1})}}"
        rc, out, _ = run_cli(8)
        assert rc == 0 and out.count("ws_down [connection-wide] recovered") == 2

    def q9() -> None:
        (rows,) = run_sql(9)
        want = []
        for side, lv in (("yes", yes_at), ("no", no_at)):
            if lv:
                want.append((side, sum(s for pr, s in lv if pr >= lv[-1][0] - 500)))
        assert [(r[0], round(r[1] * 100)) for r in rows] == want
        rc, out, _ = run_cli(9)
        doc = json.loads(out)
        assert rc == 0 and (doc["yes"], doc["no"]) == ([list(x) for x in yes_at], [list(x) for x in no_at])

    def q10() -> None:
        (rows,) = run_sql(10)
        want = sorted(t for t, mk in p.markets.items() if mk.series_ticker == m.series_ticker)
        assert sorted(r[0] for r in rows) == want
        assert all(r[1] == p.markets[r[0]].status for r in rows)
        rc, out, _ = run_cli(10)
        assert rc == 0 and [r["ticker"] for r in rows_csv(out)] == want

    checks: dict[int, Callable[[], None]] = {1: q1, 2: q2, 3: q3, 4: q4, 5: q5, 6: q6, 7: q7, 8: q8, 9: q9,
                                             10: q10}
    for n in sorted(docs):
        try:
            checks[n]()
        except AssertionError as exc:
            raise AssertionError(f"docs/analysts.md question {n}: {exc}") from exc

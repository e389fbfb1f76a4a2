"""Zero-loss acceptance under chaos: the whole fleet (simulator, three gatherers with their own
PostgreSQL, deduplicator, production) as real processes, one scripted timeline of faults, then
production must equal the simulator's ground truth.

Timeline (one fleet, tiny preset; each phase asserts its own observable effect):

1. ``gatherer_kill9``      gatherer-1 killed -9, restarted -> a ``process_down`` coverage row
2. ``socket_drop_one``     every WebSocket of gatherer-3 reset (simulator ``drop_connections``
                            filtered by gatherer-3's API key) -> only its sockets, it reconnects
3. ``seq_gaps``            an orderbook seq gap aimed at each gatherer in turn, seconds apart
4. ``gatherer_db_stop``    gatherer-2's PostgreSQL stopped 30 s -> its /health unhealthy, writer
                            errors/backpressure; after restart it writes again
5. ``dedup_kill9_twice``   deduplicator killed -9 twice -> restarts, cursors never go back and grow
6. ``production_stop``     production stopped 20 s -> deduplicator unhealthy, then healthy, caught up
7. ``rest_429_storm``      40 REST 429s -> ``rest_rate_limited_total`` grows
8. ``malformed_frames``    malformed/truncated/binary/unknown frames on every socket -> every
                            gatherer's ``router_parse_errors_total`` grows, nobody dies
9. ``withheld_trade``      a trade withheld from every socket -> in production, fetched by REST

At the end ``kalshi-data verify --truth`` must exit 0, and the test's own SQL checks: every truth
trade exactly once by trade_id (none lost, none extra), every truth delta exactly once outside the
windows in which every gatherer's orderbook stream was interrupted (stricter than verify, which
excuses any gatherer's unrecovered window), then a per-phase table of rows checked / lost /
duplicated (printed, and written to ``<tmp>/zero_loss_report.json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from kalshi_data.fleet import Fleet, find_leftovers, make_plan
from kalshi_data.verify import Report, Unrecovered, _coverage, read_truth
from shared.config import Environment
from tests.acceptance._books import compare_books

KALSHI_DATA = [str(Path(sys.executable).parent / "kalshi-data")]
if not Path(KALSHI_DATA[0]).exists():
    KALSHI_DATA = [sys.executable, "-m", "kalshi_data"]

US = 1_000_000
GATHERERS = ("gatherer-1", "gatherer-2", "gatherer-3")
DB_STOP_S = 30.0
PROD_STOP_S = 20.0


def now_us() -> int:
    return time.time_ns() // 1000


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.5) -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = cond()
        except (httpx.HTTPError, psycopg.Error, OSError, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def metric(url: str, name: str) -> float:
    """Sum of every sample of ``name`` (all label sets) on a Prometheus /metrics page."""
    total = 0.0
    for line in httpx.get(url, timeout=5).text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0].strip() == name:
            total += float(value)
    return total


def health(url: str) -> tuple[int, dict[str, Any]]:
    r = httpx.get(url, timeout=3)
    try:
        doc = r.json()
    except ValueError:
        doc = {}
    return r.status_code, doc if isinstance(doc, dict) else {}


def unhealthy(url: str) -> bool:
    try:
        code, doc = health(url)
    except httpx.HTTPError:
        return False  # not answering is not the same as reporting unhealthy
    return code == 503 or doc.get("status") == "unhealthy"


def serving(url: str) -> bool:
    code, doc = health(url)
    return code == 200 and doc.get("status") in ("healthy", "degraded")


def q(dsn: str, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, args).fetchall()


@dataclass
class Phase:
    name: str
    start_us: int
    end_us: int = 0
    effects: dict[str, Any] = field(default_factory=dict)


class Run:
    """The running fleet plus what the timeline needs to poke and observe it."""

    def __init__(self, fleet: Fleet, info: dict[str, Any]) -> None:
        self.fleet = fleet
        self.info = info
        self.procs = info["processes"]
        self.prod = info["databases"]["production"]["dsn"]
        self.gdb = {g: info["databases"][g]["dsn"] for g in GATHERERS}
        self.phases: list[Phase] = []
        self.down: set[str] = set()  # processes deliberately down right now

    def m(self, proc: str, name: str) -> float:
        return metric(self.procs[proc]["metrics_url"], name)

    def msum(self, name: str) -> float:
        return sum(self.m(g, name) for g in GATHERERS)

    def h(self, proc: str) -> str:
        return self.procs[proc]["health_url"]

    def check_alive(self) -> None:
        dead = [d for d in self.fleet.dead_processes() if d.split(":", 1)[0] not in self.down]
        assert not dead, dead

    def phase(self, name: str) -> Phase:
        self.check_alive()
        p = Phase(name, now_us())
        self.phases.append(p)
        return p

    def end(self, p: Phase) -> None:
        self.check_alive()
        # every process serving again before the next fault
        for name in (*GATHERERS, "deduplicator"):
            wait_for(lambda n=name: serving(self.h(n)), 120, f"{name} healthy after {p.name}")
        p.end_us = now_us()
        print(f"[acceptance] phase {p.name}: {(p.end_us - p.start_us) / US:.1f}s {p.effects}", flush=True)

    def prod_count(self, sql: str, args: Any = None) -> int:
        return int(q(self.prod, sql, args)[0][0])

    def dedup_lag(self) -> float | None:
        """The deduplicator's ``max_lag_seconds`` (age of the oldest unmerged row; never exactly 0
        while the gatherers keep writing)."""
        lag = health(self.h("deduplicator"))[1].get("components", {}).get("sync", {}).get("max_lag_seconds")
        return None if lag is None else float(lag)

    def cursors(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        return {(g, t): (int(x), int(s), int(n)) for g, t, x, s, n in q(
            self.prod, "SELECT gatherer_id, table_name, cursor_xid, cursor_seq, rows_merged FROM sync_cursors")}

    def admin_poll(self, gatherer: str, ticker: str) -> int:
        p = self.procs[gatherer]
        token = Path(p["admin_token_file"]).read_text().strip()
        r = httpx.post(f"{p['admin_url']}/poll-market", params={"ticker": ticker},
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return r.status_code


# --------------------------------------------------------------------------------------------
# The phases
# --------------------------------------------------------------------------------------------
def gatherer_kill9(run: Run) -> None:
    p = run.phase("gatherer_kill9")
    kill_us = now_us()
    run.down.add("gatherer-1")
    run.fleet.kill("gatherer-1")
    time.sleep(3)  # the outage itself (the scenario), not an assertion
    run.fleet.start_process("gatherer-1")
    run.down.discard("gatherer-1")
    rows = wait_for(lambda: run.prod_count(
        "SELECT count(*) FROM coverage_events WHERE gatherer_id = 'gatherer-1' AND kind = 'process_down' "
        "AND window_end >= %s", (kill_us,)), 90, "a process_down coverage row for gatherer-1 in production")
    p.effects["process_down_rows"] = rows
    run.end(p)


def socket_drop_one(run: Run) -> None:
    p = run.phase("socket_drop_one")
    target = "gatherer-3"
    key = run.procs[target]["api_key_id"]
    conns = int(health(run.h(target))[1]["components"]["websocket"]["connections"])
    before = {g: run.m(g, "conn_manager_reconnects_total") for g in GATHERERS}
    t_us = now_us()
    dropped = run.fleet.sim_fault("drop_connections", mode="reset", key_id=key)
    assert dropped == conns, f"simulator dropped {dropped} sockets, {target} had {conns}"
    wait_for(lambda: run.m(target, "conn_manager_reconnects_total") >= before[target] + conns, 60,
             f"{target} to reconnect all {conns} sockets")
    ws_down = wait_for(lambda: run.prod_count(
        "SELECT count(*) FROM coverage_events WHERE gatherer_id = %s AND kind = 'ws_down' AND window_start >= %s",
        (target, t_us - 2 * US)), 60, f"ws_down coverage rows for {target}")
    p.effects.update(sockets_dropped=dropped, ws_down_rows=ws_down,
                     other_reconnects={g: run.m(g, "conn_manager_reconnects_total") - before[g]
                                       for g in GATHERERS if g != target})
    run.end(p)


def seq_gaps(run: Run) -> None:
    """One orderbook seq gap per gatherer, a few seconds apart (the simulator's skip_seq aimed at
    the sockets of one API key); each gatherer must notice its own and no other must."""
    p = run.phase("seq_gaps")
    base = {g: run.m(g, "conn_manager_sequence_gaps_total") for g in GATHERERS}
    at: dict[str, float] = {}
    for g in GATHERERS:
        before = {x: run.m(x, "conn_manager_sequence_gaps_total") for x in GATHERERS}
        run.fleet.sim_fault("skip_seq", n=1, channel="orderbook_delta", key_id=run.procs[g]["api_key_id"])
        wait_for(lambda g=g, b=before: run.m(g, "conn_manager_sequence_gaps_total") > b[g], 60,
                 f"{g} to notice the seq gap aimed at it")
        at[g] = round((now_us() - p.start_us) / US, 1)
        others = {x: run.m(x, "conn_manager_sequence_gaps_total") - before[x] for x in GATHERERS if x != g}
        assert not any(others.values()), f"the seq gap aimed at {g} was seen by {others}"
        time.sleep(3)  # spacing: the gaps land on the gatherers at different times
    p.effects.update(gap_seen_at_s=at, gaps={g: run.m(g, "conn_manager_sequence_gaps_total") - base[g]
                                             for g in GATHERERS})
    def seq_gap_rows() -> dict[str, int] | None:
        rows = dict(q(run.prod, "SELECT gatherer_id, count(*) FROM coverage_events WHERE kind = 'seq_gap' "
                                "AND window_start >= %s GROUP BY 1", (p.start_us - 2 * US,)))
        return rows if set(rows) >= set(GATHERERS) else None

    p.effects["seq_gap_rows"] = wait_for(seq_gap_rows, 60, "seq_gap coverage rows from every gatherer")
    run.end(p)


def gatherer_db_stop(run: Run) -> None:
    p = run.phase("gatherer_db_stop")
    g = "gatherer-2"
    err0 = run.m(g, "writer_errors_total")
    bp0 = run.m(g, "writer_backpressure_seconds_total")
    cluster = run.fleet.clusters.cluster(g)
    cluster.stop()
    stopped = time.monotonic()
    saw_unhealthy = False
    while time.monotonic() - stopped < DB_STOP_S:  # the outage: 30 s, watched throughout
        saw_unhealthy = saw_unhealthy or unhealthy(run.h(g))
        run.check_alive()
        time.sleep(0.5)
    err1 = run.m(g, "writer_errors_total")
    bp1 = run.m(g, "writer_backpressure_seconds_total")
    cluster.start()
    assert saw_unhealthy, f"{g} never reported unhealthy while its database was down for {DB_STOP_S:.0f}s"
    assert err1 > err0 or bp1 > bp0, f"{g}: no writer errors and no backpressure while its database was down"
    rows0 = run.m(g, "writer_inserts_total")
    wait_for(lambda: run.m(g, "writer_inserts_total") > rows0, 90, f"{g} writing again after its database came back")
    p.effects.update(saw_unhealthy=saw_unhealthy, writer_errors=err1 - err0, backpressure_s=round(bp1 - bp0, 1))
    run.end(p)


def dedup_kill9_twice(run: Run) -> None:
    p = run.phase("dedup_kill9_twice")
    for i in (1, 2):
        before = run.cursors()
        run.down.add("deduplicator")
        run.fleet.kill("deduplicator")
        time.sleep(2)  # the outage
        run.fleet.start_process("deduplicator")
        run.down.discard("deduplicator")
        merged0 = sum(v[2] for v in before.values())
        after = wait_for(lambda m=merged0: (c := run.cursors()) and sum(v[2] for v in c.values()) > m and c, 90,
                         f"deduplicator cursors advancing after kill -9 #{i}")
        went_back = [k for k, v in before.items() if k in after and after[k][:2] < v[:2]]
        assert not went_back, f"cursors went backwards after kill -9 #{i}: {went_back}"
        p.effects[f"rows_merged_after_kill_{i}"] = sum(v[2] for v in after.values()) - merged0
    run.end(p)


def production_stop(run: Run) -> None:
    p = run.phase("production_stop")
    cluster = run.fleet.clusters.cluster("production")
    cluster.stop()
    stopped = time.monotonic()
    saw_unhealthy = False
    while time.monotonic() - stopped < PROD_STOP_S:
        saw_unhealthy = saw_unhealthy or unhealthy(run.h("deduplicator"))
        run.check_alive()
        time.sleep(0.5)
    cluster.start()
    assert saw_unhealthy, "the deduplicator never reported unhealthy while production was down"
    wait_for(lambda: serving(run.h("deduplicator")), 90, "deduplicator healthy after production came back")
    lag = wait_for(lambda: (x := run.dedup_lag()) is not None and x < 5.0 and str(x), 120,
                   "the deduplicator to catch up (lag < 5 s) after production came back")
    p.effects["dedup_lag_after_s"] = float(lag)
    p.effects["dedup_saw_unhealthy"] = saw_unhealthy
    run.end(p)


def rest_429_storm(run: Run, ticker: str) -> None:
    p = run.phase("rest_429_storm")
    base = run.msum("rest_rate_limited_total")
    run.fleet.sim_fault("rest_429", n=40)
    for g in GATHERERS:  # make every gatherer talk REST now (poll a book, backfill its trades)
        run.admin_poll(g, ticker)
    grown = wait_for(lambda: run.msum("rest_rate_limited_total") - base or None, 60, "rest_rate_limited_total to grow")
    p.effects["rest_rate_limited"] = grown
    run.end(p)


def malformed_frames(run: Run) -> None:
    p = run.phase("malformed_frames")
    base = {g: run.m(g, "router_parse_errors_total") for g in GATHERERS}
    sent = {k: run.fleet.sim_fault(k) for k in ("send_malformed", "send_truncated", "send_binary",
                                                 "send_unknown_type")}
    assert all(n and n >= len(GATHERERS) for n in sent.values()), sent
    wait_for(lambda: all(run.m(g, "router_parse_errors_total") > base[g] for g in GATHERERS), 60,
             "router_parse_errors_total to grow on every gatherer")
    p.effects.update(frames_sent=sent, parse_errors={g: run.m(g, "router_parse_errors_total") - base[g]
                                                     for g in GATHERERS})
    run.end(p)


def withheld_trades(truth: Path) -> dict[str, int]:
    out = {}
    for line in truth.read_bytes().split(b"\n"):
        if b'"withheld"' in line:
            try:
                r = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if r.get("what") == "trade" and r.get("trade_id"):
                out[str(r["trade_id"])] = int(r["n"])
    return out


def withheld_trade(run: Run, truth: Path) -> str:
    p = run.phase("withheld_trade")
    already = set(withheld_trades(truth))
    run.fleet.sim_fault("withhold_next", kind="trade", n=1)
    tids = wait_for(lambda: set(withheld_trades(truth)) - already, 60, "the simulator to withhold a trade")
    (tid,) = tids
    wait_for(lambda: run.prod_count("SELECT count(*) FROM trades WHERE trade_id = %s", (tid,)), 120,
             f"withheld trade {tid} in production (REST backfill)")
    sources = {g: sorted(s for (s,) in q(run.gdb[g], "SELECT source FROM trades WHERE trade_id = %s", (tid,)))
               for g in GATHERERS}
    assert any("rest" in s for s in sources.values()), sources
    assert not any("ws" in s for s in sources.values()), f"a withheld trade arrived over WS: {sources}"
    p.effects.update(trade_id=tid, sources=sources)
    run.end(p)
    return tid


# --------------------------------------------------------------------------------------------
# Final checks and accounting
# --------------------------------------------------------------------------------------------
def exact_checks(run: Run, truth: Path, lo: int, hi: int) -> dict[str, Any]:
    """Trades and deltas in [lo, hi): exactly once each (deltas outside lost windows); returns the
    per-phase table."""
    log = read_truth(truth)
    prod = run.prod
    report = Report(lo - 60 * US, hi + 60 * US)
    with psycopg.connect(prod, autocommit=True) as conn:
        unrec: Unrecovered = _coverage(report, conn, list(GATHERERS))
    assert not report.problems, [str(x) for x in report.problems]

    # Stricter than verify (which excuses a delta inside ANY gatherer's unrecovered window): a
    # delta is excused only where EVERY gatherer's orderbook stream was interrupted (verify's
    # delta holes; common unrecovered windows would be a problem above), or it was withheld.
    def lost_everywhere(ticker: str, ts: int) -> bool:
        return any(a <= ts <= b for key in (ticker, "*") for a, b in unrec.delta_holes.get(key, ()))

    ptrades: dict[str, list[int]] = defaultdict(list)
    for tid, ts in q(prod, "SELECT trade_id::text, exchange_ts FROM trades WHERE exchange_ts >= %s AND exchange_ts < %s",
                     (lo - 10 * US, hi + 10 * US)):
        ptrades[tid].append(int(ts))
    truth_tr = {tid: v[1] * 1000 for tid, v in log.trades.items() if lo <= v[1] * 1000 < hi}
    lost_tr = sorted(t for t in truth_tr if t not in ptrades)
    dup_tr = sorted(t for t in truth_tr if len(ptrades.get(t, [])) > 1)
    extra_tr = sorted(t for t, ts in ptrades.items() if t not in log.trades and any(lo <= x < hi for x in ts))

    starts = {t: int(ts) for t, ts in q(prod, "SELECT ticker, min(coalesce(last_delta_ts, snapshot_ts)) FROM "
                                              "orderbook_snapshots WHERE source <> 'rest' GROUP BY ticker")}
    pd: dict[str, Counter[tuple[int, str, int, int]]] = defaultdict(Counter)
    for t, ts, side, price, delta in q(prod, "SELECT ticker, exchange_ts, side, price, delta FROM orderbook_deltas "
                                             "WHERE exchange_ts >= %s AND exchange_ts < %s", (lo, hi)):
        pd[t][(int(ts), side, int(price), int(delta))] += 1
    # every truth delta: (ts, ticker, key, required?)
    tdeltas: list[tuple[int, str, tuple[int, str, int, int], bool]] = []
    tcount: dict[str, Counter[tuple[int, str, int, int]]] = defaultdict(Counter)
    for ticker, rows in log.deltas.items():
        start = starts.get(ticker)
        for ts_ms, side, price, delta, n in rows:
            ts = ts_ms * 1000
            if not lo <= ts < hi or start is None or ts < start + 1000:
                continue
            k = (ts, side, price, delta)
            tcount[ticker][k] += 1
            tdeltas.append((ts, ticker, k, not (n in log.withheld_deltas or lost_everywhere(ticker, ts))))
    # lost: a required truth delta production lacks (multiset: the i-th copy of a key needs i rows)
    seen: dict[str, Counter[tuple[int, str, int, int]]] = defaultdict(Counter)
    delta_rows: list[tuple[int, bool, bool]] = []  # (ts, required, lost)
    for ts, ticker, k, req in sorted(tdeltas):
        seen[ticker][k] += 1
        delta_rows.append((ts, req, req and pd[ticker][k] < seen[ticker][k]))
    dup_d = [(t, k) for t, c in pd.items() for k, n in c.items()
             if n > tcount[t][k] and (t in starts and k[0] >= starts[t] + 1000)]

    def window(a: int, b: int) -> dict[str, Any]:
        trades = [t for t, ts in truth_tr.items() if a <= ts < b]
        d = [r for r in delta_rows if a <= r[0] < b]
        return {"trades_checked": len(trades), "trades_in_production": sum(1 for t in trades if t in ptrades),
                "trades_lost": sum(1 for t in trades if t not in ptrades),
                "trades_duplicated": sum(1 for t in trades if len(ptrades.get(t, [])) > 1),
                "deltas_checked": sum(1 for r in d if r[1]), "deltas_excused": sum(1 for r in d if not r[1]),
                "deltas_lost": sum(1 for r in d if r[2]),
                "deltas_duplicated": sum(1 for ts, k in dup_d if a <= k[0] < b)}

    table = {p.name: {"start_us": p.start_us, "end_us": p.end_us, "seconds": round((p.end_us - p.start_us) / US, 1),
                      **window(p.start_us, p.end_us), "effects": p.effects} for p in run.phases}
    table["whole_run"] = {"start_us": lo, "end_us": hi, "seconds": round((hi - lo) / US, 1), **window(lo, hi)}
    table["whole_run"]["trades_extra"] = len(extra_tr)
    assert not lost_tr, f"{len(lost_tr)} truth trades missing from production, e.g. {lost_tr[:5]}"
    assert not dup_tr, f"{len(dup_tr)} trades stored more than once, e.g. {dup_tr[:5]}"
    assert not extra_tr, f"{len(extra_tr)} production trades not in the truth, e.g. {extra_tr[:5]}"
    lost_d = [r for r in delta_rows if r[2]]
    assert not lost_d, f"{len(lost_d)} truth deltas missing outside lost windows"
    assert not dup_d, f"{len(dup_d)} deltas stored more than the truth sent them, e.g. {dup_d[:5]}"
    assert table["whole_run"]["trades_checked"] > 0 and table["whole_run"]["deltas_checked"] > 0, table["whole_run"]
    return table


def diagnose(run: Run, verify_out: str) -> str:
    """Where the markets verify complains about stand on every gatherer (evidence for a report)."""
    tickers = sorted({w for line in verify_out.splitlines() if line.startswith(("truth_", "missing"))
                      for w in line.replace(":", " ").split() if w.startswith("KXSIM")})[:3]
    out = []
    for t in tickers:
        for db, dsn in (*run.gdb.items(), ("production", run.prod)):
            try:
                rows = q(dsn, "SELECT 'delta', exchange_ts, side, price, delta, received_at FROM orderbook_deltas "
                              "WHERE ticker = %s ORDER BY exchange_ts DESC LIMIT 6", (t,))
                rows += q(dsn, "SELECT 'snap', snapshot_ts, source, last_delta_ts, 0, received_at FROM "
                               "orderbook_snapshots WHERE ticker = %s ORDER BY snapshot_ts DESC LIMIT 3", (t,))
                rows += q(dsn, "SELECT 'cov', window_start, kind, window_end, recovered::int, scope FROM coverage_events "
                               "WHERE ticker = %s OR ticker IS NULL ORDER BY window_start DESC LIMIT 8", (t,))
                rows += q(dsn, "SELECT 'market', 0, status, close_time, 0, received_at FROM markets WHERE ticker = %s", (t,))
            except psycopg.Error as exc:
                rows = [(f"error {exc}",)]
            out.append(f"{t} on {db}:\n" + "\n".join(f"    {r}" for r in rows))
    logs = run.info["workdir"] + "/logs"
    for name in (*GATHERERS, "deduplicator"):
        lines = [ln for ln in Path(f"{logs}/{name}.log").read_text(errors="replace").splitlines()
                 if any(t in ln for t in tickers) or '"ERROR"' in ln][-8:]
        out.append(f"{name}.log:\n" + "\n".join(f"    {ln[:300]}" for ln in lines))
    return "\n".join(out)


def print_table(table: dict[str, Any]) -> None:
    cols = ("seconds", "trades_checked", "trades_lost", "trades_duplicated", "deltas_checked", "deltas_excused",
            "deltas_lost", "deltas_duplicated")
    print("\n[acceptance] phase".ljust(22) + "".join(c.replace("_", " ").rjust(18) for c in cols))
    for name, row in table.items():
        print(name.ljust(21) + "".join(str(row.get(c, "")).rjust(18) for c in cols))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_zero_loss_under_chaos(open_workdir: Path, tmp_path: Path) -> None:
    t_start = time.monotonic()
    plan = make_plan(open_workdir, preset="tiny", fast_pg=True)
    markers: list[str] = [str(open_workdir)]
    try:
        with Fleet(plan, Environment.from_os().env, ready_timeout=180) as fleet:
            info = fleet.start()
            markers += fleet.markers()
            run = Run(fleet, info)
            truth = Path(info["simulator"]["truth"])
            # warm-up: production holds trades, deltas and snapshots of some market
            wait_for(lambda: all(run.prod_count(f"SELECT count(*) FROM {t}") for t in
                                 ("trades", "orderbook_deltas", "orderbook_snapshots")), 120,
                     "production to hold trades, deltas and snapshots")
            ticker = q(run.prod, "SELECT ticker FROM trades ORDER BY exchange_ts DESC LIMIT 1")[0][0]
            lo = now_us()

            gatherer_kill9(run)
            socket_drop_one(run)
            seq_gaps(run)
            gatherer_db_stop(run)
            dedup_kill9_twice(run)
            production_stop(run)
            rest_429_storm(run, ticker)
            malformed_frames(run)
            withheld_trade(run, truth)
            hi = now_us()

            # settle: the gatherers keep recording past hi, then stop cleanly (they flush on
            # SIGTERM) and the deduplicator merges everything they hold
            wait_for(lambda: run.prod_count("SELECT count(*) FROM trades WHERE exchange_ts > %s", (hi + 5 * US,))
                     and run.prod_count("SELECT count(*) FROM orderbook_deltas WHERE exchange_ts > %s", (hi + 5 * US,)),
                     60, "production to hold data past the end of the timeline")
            run.check_alive()
            for g in GATHERERS:
                run.down.add(g)
                assert fleet.stop_process(g) is None, f"{g} did not stop cleanly"
            assert fleet.wait_merged(120), "deduplicator did not merge everything the stopped gatherers hold"
            run.check_alive()

            res = subprocess.run([*KALSHI_DATA, "verify", "--fleet", str(plan.fleet_file), "--truth", str(truth)],
                                 capture_output=True, text=True, timeout=300, check=False)
            print(res.stdout, res.stderr, flush=True)
            assert res.returncode == 0, (f"kalshi-data verify --truth exited {res.returncode}:\n{res.stdout}{res.stderr}"
                                         f"\n{diagnose(run, res.stdout)}")
            assert "books:" in res.stdout and "books: 0 market" not in res.stdout, res.stdout

            table = exact_checks(run, truth, lo, hi)
            table["books"] = compare_books(run.prod, truth, lo_us=lo, hi_us=hi)  # issue 19: books at random instants
            table["verify_cli"] = {"exit": res.returncode,
                                   "info": [ln.strip() for ln in res.stdout.splitlines() if ln.startswith("  ")]}
            out = tmp_path / "zero_loss_report.json"
            out.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
            print_table({k: v for k, v in table.items() if k != "verify_cli"})
            print(f"[acceptance] report: {out}; fleet up {time.monotonic() - t_start:.0f}s", flush=True)
            notes = fleet.stop()
            assert notes == [], notes
    finally:
        leftovers = find_leftovers(markers)
    assert leftovers == [], f"processes of {open_workdir} still running: {leftovers}"
    print(f"[acceptance] wall clock {time.monotonic() - t_start:.0f}s", flush=True)

"""The acceptance run's fault timeline: one fleet (simulator, three gatherers with their own
PostgreSQL, deduplicator, production) as real processes, and the phases that break it.

Not a test module: ``conftest.py`` drives ``run_timeline`` once per session and hands the
finished run to every test that asks (``chaos_run``). Each phase injects its faults through the
simulator's control API, the fleet's process/cluster handles or the gatherers' admin API,
asserts the effect it must have, waits until every process serves again, and records itself
(``Phase``) for the per-phase table. Overlapping faults are one phase.

Fault kinds (``FAULT_KINDS``; the nine of the first acceptance run first):

 1 gatherer_kill9            kill -9 of gatherer-1, restarted
 2 ws_reset_one_gatherer     every socket of gatherer-3 reset
 3 seq_skip                  an orderbook seq number skipped, aimed at each gatherer in turn
 4 gatherer_db_stop          gatherer-2's PostgreSQL stopped 30 s ...
 5 ws_refused_one_gatherer   ... while its sockets are dropped and refused for 8 s (overlap)
 6 dedup_kill9               the deduplicator killed -9 (twice) ...
 7 production_stop           ... and production stopped 20 s while it is killed again (overlap)
 8 rest_429                  40 REST 429s
 9 malformed_frames          malformed, truncated, binary and unknown frames on every socket
10 withheld_trade            a trade kept from every socket (REST has it)
11 ws_outage_all             every socket dropped and refused 8 s ...
12 rest_5xx                  ... with REST answering 503 ...
13 rest_hang                 ... and hanging past the client timeout (overlap of three)
14 chaos                     seeded random faults for 20 s (every menu entry but a withheld
                             delta, which is its own phase: see CHAOS_EXCLUDE) ...
15 clock_skew                ... while gatherer-1's clock is 4 s off the exchange's (overlap)
16 seq_gap_drops_deltas      deltas really lost on the wire for every gatherer (a true gap)
17 withheld_delta            a delta kept from every socket: only a book comparison sees it
18 gatherer_pg_kill9         kill -9 of gatherer-3's PostgreSQL ...
19 production_pg_kill9       ... and of production's at the same time (overlap)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from kalshi_data.fleet import Fleet

US = 1_000_000
GATHERERS = ("gatherer-1", "gatherer-2", "gatherer-3")
DB_STOP_S = 30.0
PROD_STOP_S = 20.0
CHAOS_S = 20.0
# A withheld delta consumes no seq number, so only a book comparison (poller, admin poll) can
# reveal it, and any fresh snapshot of that market first (a chaos resync or reconnect) erases
# the evidence for good. That is the exchange breaking its own protocol, not a loss a gatherer
# could admit; the withheld_delta phase tests it with the comparison forced right after.
CHAOS_EXCLUDE = ["withhold_next:delta"]

#: Shorter than production so the phases fit in minutes (gatherer config overrides).
GATHERER_OVERRIDES: dict[str, Any] = {
    "poller": {"interval_s": 10.0},
    "backfill": {"sweep_interval_s": 15.0, "retry_min_s": 1.0, "retry_max_s": 5.0},
    "resync": {"get_snapshot_timeout_s": 4.0, "resubscribe_timeout_s": 6.0, "rest_retry_s": 3.0},
    "connections": {"subscribe_timeout_s": 10.0},
    # small queues, so a 30 s database outage of the tiny preset spills to the on-disk spool
    "writer": {"batch_size": 500, "queue_max_rows": 2000},
}

FAULT_KINDS = (
    "gatherer_kill9", "ws_reset_one_gatherer", "seq_skip", "gatherer_db_stop", "ws_refused_one_gatherer",
    "dedup_kill9", "production_stop", "rest_429", "malformed_frames", "withheld_trade", "ws_outage_all",
    "rest_5xx", "rest_hang", "chaos", "clock_skew", "seq_gap_drops_deltas", "withheld_delta",
    "gatherer_pg_kill9", "production_pg_kill9",
)


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


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` (with these labels) on a Prometheus /metrics page."""
    total = 0.0
    for line in httpx.get(url, timeout=5).text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{", 1)[0].strip() != name:
            continue
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
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
    faults: tuple[str, ...]
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
        self.truth = Path(info["simulator"]["truth"])
        self.phases: list[Phase] = []
        self.down: set[str] = set()  # processes deliberately down right now

    def m(self, proc: str, name: str, **labels: str) -> float:
        return metric(self.procs[proc]["metrics_url"], name, **labels)

    def msum(self, name: str, **labels: str) -> float:
        return sum(self.m(g, name, **labels) for g in GATHERERS)

    def h(self, proc: str) -> str:
        return self.procs[proc]["health_url"]

    def key(self, gatherer: str) -> str:
        return str(self.procs[gatherer]["api_key_id"])

    def check_alive(self) -> None:
        dead = [d for d in self.fleet.dead_processes() if d.split(":", 1)[0] not in self.down]
        assert not dead, dead

    def phase(self, name: str, *faults: str) -> Phase:
        self.check_alive()
        p = Phase(name, now_us(), faults or (name,))
        self.phases.append(p)
        return p

    def end(self, p: Phase) -> None:
        self.check_alive()
        for name in (*GATHERERS, "deduplicator"):  # every process serving again before the next
            wait_for(lambda n=name: serving(self.h(n)), 120, f"{name} healthy after {p.name}")
        p.end_us = now_us()
        print(f"[acceptance] phase {p.name}: {(p.end_us - p.start_us) / US:.1f}s {p.effects}", flush=True)

    def prod_count(self, sql: str, args: Any = None) -> int:
        return int(q(self.prod, sql, args)[0][0])

    def dedup_lag(self) -> float | None:
        lag = health(self.h("deduplicator"))[1].get("components", {}).get("sync", {}).get("max_lag_seconds")
        return None if lag is None else float(lag)

    def cursors(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        return {(g, t): (int(x), int(s), int(n)) for g, t, x, s, n in q(
            self.prod, "SELECT gatherer_id, table_name, cursor_xid, cursor_seq, rows_merged FROM sync_cursors")}

    def admin_poll(self, gatherer: str, ticker: str) -> int:
        p = self.procs[gatherer]
        token = Path(p["admin_token_file"]).read_text().strip()
        r = httpx.post(f"{p['admin_url']}/poll-market", params={"ticker": ticker},
                       headers={"Authorization": f"Bearer {token}"}, timeout=60)
        return r.status_code

    def truth_records(self, kind: str) -> list[dict[str, Any]]:
        out = []
        needle = f'"k":"{kind}"'.encode()
        for line in self.truth.read_bytes().split(b"\n"):
            if needle in line:
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    continue  # the simulator is still writing the last line
        return out

    def busy_ticker(self, skip: tuple[str, ...] = ()) -> str:
        """The market with the most deltas in production over the last minute."""
        return self.busy_tickers(60, skip)[0]

    def arm_on_busy_market(self, fault: str, seen: Callable[[], set[int]], skip: tuple[str, ...] = (),
                           **params: Any) -> tuple[str, set[int]]:
        """Arm ``fault`` on the busiest market of the last 10 s, or the next one if 20 s pass with
        nothing new in ``seen()`` (the market went quiet, e.g. closed). A fault left armed on a
        quiet market is one more loss that the ledger declares or verify excuses if it ever
        fires. Returns the market and what ``seen()`` gained."""
        before = seen()
        for candidate in self.busy_tickers(10, skip)[:3]:
            self.fleet.sim_fault(fault, ticker=candidate, **params)
            try:
                return candidate, wait_for(lambda: seen() - before, 20, f"the simulator's {fault} on {candidate}")
            except AssertionError:
                continue
        raise AssertionError(f"none of the three busiest markets took {fault} within 20 s")

    def busy_tickers(self, within_s: float, skip: tuple[str, ...] = ()) -> list[str]:
        """Markets by deltas in production over the last ``within_s`` seconds, busiest first."""
        rows = q(self.prod, "SELECT ticker, count(*) FROM orderbook_deltas WHERE exchange_ts > %s "
                            "GROUP BY 1 ORDER BY 2 DESC LIMIT 5", (now_us() - int(within_s * US),))
        return [t for t, _n in rows if t not in skip]


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
    p.effects["process_down_rows"] = wait_for(lambda: run.prod_count(
        "SELECT count(*) FROM coverage_events WHERE gatherer_id = 'gatherer-1' AND kind = 'process_down' "
        "AND window_end >= %s", (kill_us,)), 90, "a process_down coverage row for gatherer-1 in production")
    run.end(p)


def socket_drop_one(run: Run) -> None:
    p = run.phase("socket_drop_one", "ws_reset_one_gatherer")
    target = "gatherer-3"
    conns = int(health(run.h(target))[1]["components"]["websocket"]["connections"])
    before = {g: run.m(g, "conn_manager_reconnects_total") for g in GATHERERS}
    t_us = now_us()
    dropped = run.fleet.sim_fault("drop_connections", mode="reset", key_id=run.key(target))
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
    """An orderbook seq number skipped for each gatherer in turn (detection: no data lost)."""
    p = run.phase("seq_gaps", "seq_skip")
    for g in GATHERERS:
        before = {x: run.m(x, "conn_manager_sequence_gaps_total") for x in GATHERERS}
        run.fleet.sim_fault("skip_seq", n=1, channel="orderbook_delta", key_id=run.key(g))
        wait_for(lambda g=g, b=before: run.m(g, "conn_manager_sequence_gaps_total") > b[g], 60,
                 f"{g} to notice the seq gap aimed at it")
        others = {x: run.m(x, "conn_manager_sequence_gaps_total") - before[x] for x in GATHERERS if x != g}
        assert not any(others.values()), f"the seq gap aimed at {g} was seen by {others}"
        time.sleep(1)  # the gaps land on the gatherers at different times
    rows = wait_for(lambda: (r := dict(q(run.prod, "SELECT gatherer_id, count(*) FROM coverage_events WHERE "
                                                   "kind = 'resync' AND recovered AND window_start >= %s GROUP BY 1",
                                         (p.start_us - 2 * US,)))) and set(r) >= set(GATHERERS) and r,
                    60, "resyncs closed as recovered on every gatherer")
    p.effects["resyncs_recovered"] = rows
    run.end(p)


def db_stop_during_socket_outage(run: Run) -> None:
    """gatherer-2's database stopped 30 s; meanwhile its sockets are dropped and refused 8 s. The
    sockets must keep being read (the spool takes the rows: no backpressure), it reconnects while
    its database is still down, and everything lands once the database is back."""
    p = run.phase("db_stop_during_socket_outage", "gatherer_db_stop", "ws_refused_one_gatherer")
    g = "gatherer-2"
    bp0 = run.m(g, "writer_backpressure_seconds_total")
    spill0 = run.m(g, "writer_spool_spilled_rows_total")
    rec0 = run.m(g, "conn_manager_reconnects_total")
    cluster = run.fleet.clusters.cluster(g)
    cluster.stop()
    stopped = time.monotonic()
    time.sleep(3)
    run.fleet.sim_fault("refuse_connections", seconds=8, status=503, key_id=run.key(g))
    run.fleet.sim_fault("drop_connections", mode="reset", key_id=run.key(g))
    saw_unhealthy = False
    while time.monotonic() - stopped < DB_STOP_S:  # the outage, watched throughout
        saw_unhealthy = saw_unhealthy or unhealthy(run.h(g))
        run.check_alive()
        time.sleep(0.5)
    reconnected_while_down = run.m(g, "conn_manager_reconnects_total") > rec0
    spilled = run.m(g, "writer_spool_spilled_rows_total") - spill0
    backpressure = run.m(g, "writer_backpressure_seconds_total") - bp0
    cluster.start()
    assert saw_unhealthy, f"{g} never reported unhealthy while its database was down"
    assert reconnected_while_down, f"{g} did not reconnect while its database was down"
    assert spilled > 0, f"{g} spooled nothing while its database was down"
    assert backpressure == 0, f"{g} blocked its sockets {backpressure:.1f}s although the spool had room"
    rows0 = run.m(g, "writer_inserts_total")
    wait_for(lambda: run.m(g, "writer_inserts_total") > rows0, 90, f"{g} writing again")
    wait_for(lambda: run.m(g, "writer_spool_rows") == 0, 90, f"{g} spool drained")
    trade_down = wait_for(lambda: (r := q(run.gdb[g], "SELECT bool_and(recovered), count(*) FROM coverage_events "
                                                      "WHERE kind = 'ws_down' AND detail->>'role' = 'trade' "
                                                      "AND window_start >= %s", (p.start_us,))) and r[0][1] and r[0][0] and r[0],
                          90, f"{g}'s trade-socket outage closed as recovered (its backfill committed)")
    p.effects.update(saw_unhealthy=saw_unhealthy, rows_spooled=int(spilled), backpressure_s=backpressure,
                     trade_outages_recovered=trade_down[1],
                     replayed=int(run.m(g, "writer_spool_replayed_rows_total")))
    run.end(p)


def dedup_kill9_twice(run: Run) -> None:
    p = run.phase("dedup_kill9_twice", "dedup_kill9")
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


def production_down_dedup_killed(run: Run) -> None:
    """Production stopped 20 s, and the deduplicator killed -9 and restarted while it is down."""
    p = run.phase("production_down_dedup_killed", "production_stop", "dedup_kill9")
    before = run.cursors()
    cluster = run.fleet.clusters.cluster("production")
    cluster.stop()
    stopped = time.monotonic()
    time.sleep(3)
    run.down.add("deduplicator")
    run.fleet.kill("deduplicator")
    time.sleep(1)
    run.fleet.start_process("deduplicator", wait=False)  # it cannot be ready without production
    run.down.discard("deduplicator")
    saw_unhealthy = False
    while time.monotonic() - stopped < PROD_STOP_S:
        saw_unhealthy = saw_unhealthy or unhealthy(run.h("deduplicator"))
        run.check_alive()
        time.sleep(0.5)
    cluster.start()
    assert saw_unhealthy, "the deduplicator never reported unhealthy while production was down"
    wait_for(lambda: serving(run.h("deduplicator")), 90, "deduplicator healthy after production came back")
    lag = wait_for(lambda: (x := run.dedup_lag()) is not None and x < 5.0 and str(x), 120,
                   "the deduplicator to catch up (lag < 5 s)")
    after = run.cursors()
    went_back = [k for k, v in before.items() if k in after and after[k][:2] < v[:2]]
    assert not went_back, f"cursors went backwards: {went_back}"
    p.effects.update(dedup_lag_after_s=float(lag), dedup_saw_unhealthy=saw_unhealthy)
    run.end(p)


def rest_429_storm(run: Run, ticker: str) -> None:
    p = run.phase("rest_429_storm", "rest_429")
    base = run.msum("rest_rate_limited_total")
    run.fleet.sim_fault("rest_429", n=40)
    for g in GATHERERS:  # make every gatherer talk REST now (poll a book, backfill its trades)
        run.admin_poll(g, ticker)
    p.effects["rest_rate_limited"] = wait_for(lambda: run.msum("rest_rate_limited_total") - base or None, 60,
                                              "rest_rate_limited_total to grow")
    run.end(p)


def malformed_frames(run: Run) -> None:
    p = run.phase("malformed_frames")
    base = {g: run.m(g, "router_parse_errors_total") for g in GATHERERS}
    sent = {k: run.fleet.sim_fault(k) for k in ("send_malformed", "send_truncated", "send_binary",
                                                 "send_unknown_type")}
    assert all(n and n >= len(GATHERERS) for n in sent.values()), sent
    wait_for(lambda: all(run.m(g, "router_parse_errors_total") > base[g] for g in GATHERERS), 60,
             "router_parse_errors_total to grow on every gatherer")
    p.effects.update(frames_sent=sent)
    run.end(p)


def withheld_trade(run: Run) -> None:
    p = run.phase("withheld_trade")
    already = {r.get("trade_id") for r in run.truth_records("withheld")}
    run.fleet.sim_fault("withhold_next", kind="trade", n=1)
    tids = wait_for(lambda: {r["trade_id"] for r in run.truth_records("withheld") if r.get("what") == "trade"}
                    - already, 60, "the simulator to withhold a trade")
    (tid,) = tids
    wait_for(lambda: run.prod_count("SELECT count(*) FROM trades WHERE trade_id = %s", (tid,)), 120,
             f"withheld trade {tid} in production (REST backfill)")
    sources = {g: sorted(s for (s,) in q(run.gdb[g], "SELECT source FROM trades WHERE trade_id = %s", (tid,)))
               for g in GATHERERS}
    assert any("rest" in s for s in sources.values()), sources
    assert not any("ws" in s for s in sources.values()), f"a withheld trade arrived over WS: {sources}"
    p.effects.update(trade_id=tid, sources=sources)
    run.end(p)


def ws_outage_with_rest_failing(run: Run) -> None:
    """Every socket dropped and refused 8 s while REST answers 503 and hangs: the reconnect
    backfills fail, stay queued, are retried with backoff, and complete once REST is back."""
    p = run.phase("ws_outage_with_rest_failing", "ws_outage_all", "rest_5xx", "rest_hang")
    fail0 = run.msum("backfill_failures_total")
    run.fleet.sim_fault("rest_5xx", n=1_000_000, status=503)
    run.fleet.sim_fault("rest_hang", n=3, seconds=15.0)
    run.fleet.sim_fault("refuse_connections", seconds=8.0, status=503)
    dropped = run.fleet.sim_fault("drop_connections", mode="reset")
    failed = wait_for(lambda: run.msum("backfill_failures_total") - fail0 or None, 90,
                      "a backfill attempt to fail (and stay queued)")
    pending = {g: q(run.gdb[g], "SELECT count(*) FROM backfill_queue WHERE state = 'pending' AND attempts > 0")[0][0]
               for g in GATHERERS}
    run.fleet.sim_fault("rest_5xx", n=0)
    run.fleet.sim_fault("rest_hang", n=0)

    def reconnect_windows_done() -> bool:
        for g in GATHERERS:
            r = q(run.gdb[g], "SELECT count(*), count(*) FILTER (WHERE state = 'done') FROM backfill_queue "
                              "WHERE reason LIKE '%%reconnect%%' AND created_at >= %s", (p.start_us,))[0]
            if not r[0] or r[0] != r[1]:
                return False
        return True

    wait_for(reconnect_windows_done, 120, "every reconnect backfill window done")
    p.effects.update(sockets_dropped=dropped, backfill_failures=failed, windows_retried=pending)
    run.end(p)


def chaos_with_clock_skew(run: Run) -> None:
    """gatherer-1's clock 4 s off the exchange's: it warns (rest_clock_skew_seconds), its key stays
    accepted (inside Kalshi's window) and it works; meanwhile seeded random faults for CHAOS_S s."""
    p = run.phase("chaos_with_clock_skew", "chaos", "clock_skew")
    control = run.info["simulator"]["control_url"]
    counts0 = httpx.get(f"{control}/faults", timeout=5).json()["counts"]
    run.fleet.sim_fault("clock_skew", ms=4000, key_id=run.key("gatherer-1"))
    assert run.admin_poll("gatherer-1", run.busy_ticker()) == 200  # REST works, skewed or not
    skew = wait_for(lambda: (s := run.m("gatherer-1", "rest_clock_skew_seconds")) < -2 and s, 30,
                    "gatherer-1 to see its clock 4 s off")
    others = {g: run.m(g, "rest_clock_skew_seconds") for g in GATHERERS if g != "gatherer-1"}
    assert all(abs(v) < 2 for v in others.values()), others
    labels = run.fleet.sim_fault("chaos", on=True, seed=11, per_s=1.0, exclude=CHAOS_EXCLUDE)
    time.sleep(CHAOS_S)
    run.fleet.sim_fault("chaos", on=False)
    run.fleet.sim_fault("clock_skew", ms=0, key_id=run.key("gatherer-1"))
    counts = httpx.get(f"{control}/faults", timeout=5).json()["counts"]
    picked = {k[6:]: v - counts0.get(k, 0) for k, v in counts.items()
              if k.startswith("chaos:") and v > counts0.get(k, 0)}
    assert picked and not set(picked) & set(CHAOS_EXCLUDE), picked
    p.effects.update(clock_skew_s=round(skew, 1), chaos_faults=sum(picked.values()), picked=picked,
                     menu=len(labels))
    run.end(p)


def dropped_deltas_everywhere(run: Run) -> str:
    """Deltas of one market lost on the wire for every gatherer: a true seq gap everywhere. Each
    gatherer declares the loss (seq_gap, unrecovered) and resyncs (resync, recovered)."""
    p = run.phase("dropped_deltas_everywhere", "seq_gap_drops_deltas")
    ticker, ns = run.arm_on_busy_market("drop_deltas", lambda: {r["n"] for r in run.truth_records("dropped")}, n=2)

    def resynced() -> dict[str, int] | None:
        rows = dict(q(run.prod, "SELECT gatherer_id, count(*) FROM coverage_events WHERE kind = 'resync' "
                                "AND recovered AND ticker = %s AND window_start >= %s GROUP BY 1",
                      (ticker, p.start_us - 2 * US)))
        return rows if set(rows) >= set(GATHERERS) else None

    p.effects["resyncs"] = wait_for(resynced, 60, f"every gatherer's resync of {ticker} recovered")
    gaps = dict(q(run.prod, "SELECT gatherer_id, count(*) FROM coverage_events WHERE kind = 'seq_gap' AND "
                            "NOT recovered AND ticker = %s AND window_start >= %s GROUP BY 1",
                  (ticker, p.start_us - 2 * US)))
    assert set(gaps) >= set(GATHERERS), gaps
    p.effects.update(ticker=ticker, deltas_dropped=len(ns), dropped_n=sorted(ns), seq_gap_rows=gaps)
    run.end(p)
    return ticker


def withheld_delta(run: Run, skip: tuple[str, ...]) -> str:
    """A delta kept from every socket (no seq gap: only a book comparison can see it); each
    gatherer's REST comparison is forced at once and must declare the loss (book_mismatch)."""
    p = run.phase("withheld_delta")
    ticker, _ = run.arm_on_busy_market(
        "withhold_next", lambda: {r["n"] for r in run.truth_records("withheld") if r.get("what") == "delta"},
        skip, kind="delta", n=1)
    time.sleep(0.5)  # the WS deltas sent before REST answers are in every book
    codes = {g: run.admin_poll(g, ticker) for g in GATHERERS}
    assert set(codes.values()) == {200}, codes

    def declared() -> dict[str, int] | None:
        rows = dict(q(run.prod, "SELECT gatherer_id, count(*) FROM coverage_events WHERE kind = 'book_mismatch' "
                                "AND NOT recovered AND ticker = %s AND window_end >= %s GROUP BY 1",
                      (ticker, p.start_us)))
        return rows if set(rows) >= set(GATHERERS) else None

    p.effects.update(ticker=ticker, book_mismatch_rows=wait_for(declared, 60, "every gatherer to declare it"))
    run.end(p)
    return ticker


def postgres_kill9(run: Run) -> None:
    """kill -9 of gatherer-3's PostgreSQL and of production's at once, restarted after 5 s."""
    p = run.phase("postgres_kill9", "gatherer_pg_kill9", "production_pg_kill9")
    g = "gatherer-3"
    err0 = run.m(g, "writer_errors_total")
    gcl, pcl = run.fleet.clusters.cluster(g), run.fleet.clusters.cluster("production")
    gcl.kill()
    pcl.kill()
    time.sleep(5)
    gcl.start()
    pcl.start()
    rows0 = run.m(g, "writer_inserts_total")
    wait_for(lambda: run.m(g, "writer_inserts_total") > rows0, 90, f"{g} writing again")
    wait_for(lambda: (x := run.dedup_lag()) is not None and x < 5.0, 120, "the deduplicator caught up")
    p.effects.update(writer_errors=run.m(g, "writer_errors_total") - err0)
    run.end(p)


def run_timeline(run: Run) -> dict[str, str]:
    """Every phase in order; returns the markets the book checks look at."""
    ticker = q(run.prod, "SELECT ticker FROM trades ORDER BY exchange_ts DESC LIMIT 1")[0][0]
    gatherer_kill9(run)
    socket_drop_one(run)
    seq_gaps(run)
    db_stop_during_socket_outage(run)
    dedup_kill9_twice(run)
    production_down_dedup_killed(run)
    rest_429_storm(run, ticker)
    malformed_frames(run)
    withheld_trade(run)
    ws_outage_with_rest_failing(run)
    chaos_with_clock_skew(run)
    dropped = dropped_deltas_everywhere(run)
    withheld = withheld_delta(run, (dropped,))
    postgres_kill9(run)
    return {"dropped_deltas": dropped, "withheld_delta": withheld}

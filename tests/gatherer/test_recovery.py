"""Recovery that tells the truth, against the real simulator and a real PostgreSQL: deltas really
lost in a seq gap and the ledger's windows for them, the resync state machine's fallbacks
(get_snapshot ignored -> resubscribe -> REST snapshot), and the durable backfill queue (a window
that fails is retried with backoff and survives a restart; sweeps are contiguous across it)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from tests.gatherer import _harness as h

#: Short resync steps so each fallback happens within a second or two.
RESYNC = {"get_snapshot_timeout_s": 1.0, "resubscribe_timeout_s": 1.5, "rest_retry_s": 1.0}


async def _started(run_app: Any, doc: dict[str, Any]) -> Any:
    app = await run_app(doc)
    await h.wait_for(lambda: app.health.ready()[0], 10, "gatherer ready")
    await asyncio.sleep(1.0)
    return app


def _cov(dsn: str, kind: str, since: int) -> list[tuple[Any, ...]]:
    return h.query(dsn, "SELECT ticker, window_start, window_end, recovered, detail, event_id::text "
                        "FROM coverage_events WHERE kind = %s AND window_start >= %s "
                        "ORDER BY window_start", (kind, since))


async def test_deltas_lost_in_a_gap_are_declared_and_the_book_comes_back(
        gsim: Any, gconf: Any, run_app: Any, gatherer_dsn: str) -> None:
    app = await _started(run_app, gconf(resync=RESYNC))
    t0 = h.now_us()
    n0 = len(gsim.truth.deltas_)
    gsim.faults.drop_deltas(n=3)  # gone on the wire: a real gap, data lost for every client

    def done() -> list[tuple[Any, ...]]:
        rows = _cov(gatherer_dsn, "resync", t0 - 5_000_000)
        return rows if rows and all(r[3] for r in rows) else []

    resyncs = await h.wait_for(done, 15, "resync events closed as recovered")
    gaps = _cov(gatherer_dsn, "seq_gap", t0 - 5_000_000)
    assert gaps and not any(r[3] for r in gaps), gaps  # the deltas are gone: never "recovered"
    dropped = [r["n"] for r in gsim.truth.withheld if r["k"] == "dropped"]
    assert len(dropped) == 3 and min(dropped) >= n0
    for n in dropped:
        d = gsim.truth.deltas_[n]
        # each lost delta lies inside an unrecovered seq_gap window of its market
        # (windows are on the gatherer's receive clock; detail.exchange_offset_us maps them to
        # the exchange's, which is the simulator's virtual clock)
        assert any(r[0] == d.ticker and r[1] + r[4]["exchange_offset_us"] - 100_000 <= d.ts_us
                   <= r[2] + r[4]["exchange_offset_us"] + 100_000 for r in gaps), \
            (d, [(r[0], r[1], r[2]) for r in gaps if r[0] == d.ticker], h.now_us())
    snaps = {(t, rx) for t, rx in h.query(
        gatherer_dsn, "SELECT ticker, received_at FROM orderbook_snapshots WHERE source = 'resync'")}
    for ticker, start, end, _rec, detail, _eid in resyncs:
        assert detail["how"] == "get_snapshot" and start <= end, detail
        assert (ticker, end) in snaps  # the window ends at the committed snapshot itself
    assert h.metric(app, "resync_completed_total", how="get_snapshot") >= len(resyncs)
    assert h.metric(app, "resync_dirty_books") == 0
    await h.assert_complete(gsim, gatherer_dsn)  # and every book equals the truth again


async def test_resync_falls_back_to_resubscribe_then_to_a_rest_snapshot(
        gsim: Any, gconf: Any, run_app: Any, gatherer_dsn: str, key_files: Any) -> None:
    doc = gconf(resync=RESYNC, connections={"subscribe_timeout_s": 2.0})
    app = await _started(run_app, doc)
    key = key_files[0]
    f = gsim.faults
    f.ignore_commands(n=1000, action="get_snapshot", key_id=key)  # never answered
    f.drop_deltas(n=1)
    await h.wait_for(lambda: h.metric(app, "resync_completed_total", how="resubscribe") >= 1, 15,
                     "a resync completed by the resubscribe")
    assert h.metric(app, "resync_steps_total", step="resubscribe") >= 1
    await h.wait_for(lambda: app.conns.healthy_count() == 5, 10, "resubscribed")
    await asyncio.sleep(0.5)

    f.ignore_commands(n=1, action="subscribe", key_id=key)  # and the resubscribe goes unanswered
    f.drop_deltas(n=1)
    await h.wait_for(lambda: h.metric(app, "resync_completed_total", how="rest_snapshot") >= 1, 20,
                     "a resync completed by a REST snapshot")
    assert h.metric(app, "resync_steps_total", step="rest_snapshot") >= 1
    # the unanswered subscribe is not waited for forever: the socket reconnects
    await h.wait_for(lambda: h.metric_sum(app, "ws_client_errors_total", type="subscribe_timeout") >= 1,
                     15, "the unanswered subscribe given up")
    await h.wait_for(lambda: app.conns.healthy_count() == 5, 15, "every socket subscribed again")
    f.pending["ignore_get_snapshot"] = 0
    await h.wait_for(lambda: h.metric(app, "resync_dirty_books") == 0, 15, "no dirty book left")
    rest = await h.wait_for(lambda: h.query(
        gatherer_dsn, "SELECT detail FROM coverage_events WHERE kind = 'resync' AND recovered "
                      "AND detail->>'how' = 'rest_snapshot'"), 10, "the REST-snapshot resyncs committed")
    assert all("rest_snapshot" in d["steps"] for (d,) in rest)
    await h.assert_complete(gsim, gatherer_dsn)


async def test_a_failed_backfill_window_is_retried_and_survives_a_restart(
        gsim: Any, gconf: Any, run_app: Any, gatherer_dsn: str) -> None:
    doc = gconf(backfill={"sweep_interval_s": 2.0, "retry_min_s": 0.5, "retry_max_s": 1.0})
    app = await _started(run_app, doc)
    f = gsim.faults
    f.withhold_next("trade", n=2)  # only REST can bring these in
    await asyncio.sleep(0.5)
    f.rest_5xx(n=100_000, status=400)  # REST refuses every request: nothing can be backfilled
    await h.wait_for(lambda: h.metric(app, "backfill_failures_total") >= 2, 20, "backfill attempts failing")
    await h.wait_for(lambda: h.metric(app, "backfill_oldest_pending_seconds") > 0, 5, "a window waiting")
    pending = h.query(gatherer_dsn, "SELECT id, attempts, last_error, coverage_event::text FROM backfill_queue "
                                    "WHERE state = 'pending' AND attempts > 0")
    assert pending and all(e for _i, _a, e, _c in pending), pending
    await asyncio.wait_for(app.stop(), 40)  # a restart with windows still pending
    cov = {r[5]: r for r in _cov(gatherer_dsn, "trade_backfill", 0)}
    assert all(not cov[c][3] for *_x, c in pending if c in cov)  # the ledger says: not recovered
    f.pending["rest_5xx"] = 0

    t_restart = h.now_us()
    app2 = await _started(run_app, doc)
    ids = [p[0] for p in pending]

    def all_done() -> bool:
        states = h.query(gatherer_dsn, "SELECT state FROM backfill_queue WHERE id = ANY(%s)", (ids,))
        return bool(states) and all(s == "done" for (s,) in states)

    await h.wait_for(all_done, 20, "the windows of the previous run done")
    events = [c for *_x, c in pending]

    def closed() -> bool:
        rows = h.query(gatherer_dsn, "SELECT recovered FROM coverage_events WHERE event_id = ANY(%s::uuid[])",
                       (events,))
        return len(rows) == len(set(events)) and all(r for (r,) in rows)

    await h.wait_for(closed, 10, "their coverage events (same ids) closed as recovered")
    # sweeps are contiguous: each starts where the previous one ended, across the restart
    sweeps = h.query(gatherer_dsn, "SELECT window_from, window_to, created_at FROM backfill_queue "
                                   "WHERE reason = 'sweep' ORDER BY window_from")
    assert all(b[0] == a[1] for a, b in itertools.pairwise(sweeps)), sweeps
    before = [sw for sw in sweeps if sw[2] < t_restart]
    after = [sw for sw in sweeps if sw[2] >= t_restart]
    assert before and after and after[0][0] == before[-1][1], sweeps
    assert h.metric(app2, "backfill_windows_done_total") >= len(ids)
    await h.assert_complete(gsim, gatherer_dsn, books=False)

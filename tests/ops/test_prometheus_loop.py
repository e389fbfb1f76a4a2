"""Prometheus in the loop: one fleet with a real Prometheus, Alertmanager and node exporter; every
alert that one machine can provoke is provoked, must fire in Prometheus' /api/v1/alerts, must reach
a local webhook through Alertmanager's shipped routing, and must resolve after recovery; every
panel of the four dashboards must return data from that Prometheus.

Time compression, documented once: the rule files are loaded with every ``for:`` divided by
``TIME_FACTOR`` (one minute becomes one second; kalshi_data/fleet/monitoring.py), Alertmanager's
route timings likewise, Prometheus scrapes and evaluates every ``SCRAPE_S``. Expressions,
thresholds and rate()/increase() windows are exactly as shipped: a 1 s scrape interval gives
every window from 5 m up hundreds of samples. Two consequences are stated, not hidden:

* thresholds that are wall-clock durations stay wall-clock durations: SyncLagCritical needs
  production 300 s behind and DataStale 300 s of silence, so the faults take about seven
  minutes (they start together; the production chain needs ~100 s before its lock) and the whole
  test eight to nine on two loaded cores;
* an alert on ``increase(x[15m]) > N`` (or a 5m/10m/1h/6h window) keeps firing until its last
  event leaves the window. Resolution is awaited for every alert whose window allows it within
  the run; ``Expect.resolve`` names the window for the others, and the run checks instead that
  the events behind them stopped after recovery (``Loop.settled``; the promtool unit tests in
  alerts/tests/ show those rules resolving).

A new alert is a row in ``EXPECT`` (its fault, the labels it must carry, and its window if it
cannot resolve within the run) plus, unless an existing fault already provokes it, a function
that provokes it, waits with ``lp.fired``, recovers, and waits with ``lp.resolved`` (or
``lp.settled``), added to a chain in ``FAULT_SCHEDULE``.

Faults run in parallel where they do not touch the same part: the table ``EXPECT`` says which
fault fires which alert (with the labels it must carry); ``UNPROVOKABLE`` lists the alerts one
machine cannot provoke, with the reason. An alert in alerts/*.yml that is in neither table fails
the test, so a new rule needs a fault (a function below and a row in EXPECT) or a reason.

The seconds from each fault to its alert firing are printed and written to
``<pytest tmp>/prometheus_loop_report.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest

from deduplicator.tables import SPECS
from kalshi_data.fleet import Fleet, find_leftovers, make_plan
from shared.config import Environment
from tests.acceptance.test_zero_loss import wait_for

from ._promql import substitute_grafana_variables
from ._rules import alert_rules
from ._tools import REPO, require_tool
from ._webhook import WebhookReceiver

TIME_FACTOR = 60.0
SCRAPE_S = 1.0
GATHERERS = ("gatherer-1", "gatherer-2", "gatherer-3")
# Grafana's built-in variables and the dashboards' own ($instance: its "All" value).
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h", "$instance": ".*"}
KALSHI_DATA = [str(Path(sys.executable).parent / "kalshi-data")]
DEDUPLICATOR = [str(Path(sys.executable).parent / "kalshi-deduplicator")]
# Wall-clock thresholds of the shipped rules (see the module docstring).
SYNC_LAG_CRITICAL_S = 300
ARCHIVE_BUCKET = "loop-archive"
DATA_STALE_S = 300


@dataclass(frozen=True)
class Expect:
    """An alert the run provokes: by which fault, with which labels; ``resolve`` is None when
    its resolution is awaited in the run, else why it is not (the rule's window)."""

    fault: str
    labels: dict[str, str] = field(default_factory=dict)
    resolve: str | None = None


EXPECT: dict[str, Expect] = {
    "SingleGathererDown": Expect("gatherer_databases_down", {"gatherer": "gatherer-1"}),
    "AllGatherersDown": Expect("gatherer_databases_down"),
    "HighWriterErrorRate": Expect("gatherer_databases_down", resolve="rate() over 5m of writer errors"),
    "ProductionRDSUnreachable": Expect("production_outage"),
    "DeduplicatorDown": Expect("deduplicator_rewind"),
    "HighDuplicateRate": Expect("deduplicator_rewind", resolve="rate() over 15m of duplicates"),
    "ConnectionPoolExhaustion": Expect("production_locked", {"database": "production", "instance": "deduplicator"}),
    "DeduplicatorSyncStalled": Expect("production_locked"),
    "SyncLagCritical": Expect("production_locked"),
    "DataStale": Expect("ticker_feed_stalled", {"instance": "gatherer-2", "role": "ticker"}),
    "SequenceGapsDetected": Expect("sequence_gaps", {"instance": "gatherer-2", "role": "orderbook"},
                                   resolve="increase() over 15m of sequence gaps"),
    "HighReconnectRate": Expect("socket_storm", {"instance": "gatherer-3"},
                                resolve="increase() over 15m of reconnects"),
    "AllWebSocketsDisconnected": Expect("sockets_refused", {"instance": "gatherer-3"}),
    "SingleRoleDown": Expect("sockets_refused", {"instance": "gatherer-3"}),
    "HighFlushLatency": Expect("gatherer_tables_locked", {"instance": "gatherer-3"},
                               resolve="rate() over 5m of flush-duration buckets"),
    "WriterBackpressure": Expect("gatherer_tables_locked", {"instance": "gatherer-3"},
                                 resolve="rate() over 5m of backpressure seconds"),
    "WriterSpoolFilling": Expect("gatherer_tables_locked", {"instance": "gatherer-3"}),
    "DefaultPartitionNotEmpty": Expect("default_partition_row", {"instance": "gatherer-2", "database": "gatherer",
                                                               "table": "trades"}),
    "PartitionsRunningOut": Expect("partition_names_taken", {"instance": "gatherer-1", "database": "gatherer",
                                                          "table": "trades"}),
    "WriterRowsRejected": Expect("rejected_rows", {"instance": "gatherer-1", "writer": "tickers"},
                                 resolve="increase() over 15m of rejected rows"),
    "S3UploadFailure": Expect("archive_upload_fails", {"table": "trades"}, resolve="increase() over 1h of S3 errors"),
    "ExportErrorRate": Expect("archive_upload_fails", {"table": "trades"}, resolve="increase() over 6h of export errors"),
    "ExportLagWarning": Expect("archive_behind", {"table": "trades"}),
    "NoMarketsPolled": Expect("rest_outage", {"instance": "gatherer-1"}),
    "MarketRegistryReconciling": Expect("rest_outage"),
    "DeduplicatorRowsRejected": Expect("production_refuses_a_row", {"gatherer": "gatherer-2", "table": "tickers"},
                                       resolve="increase() over 15m of rejected rows"),
    "GathererClockSkew": Expect("gatherer_clock_skew", {"instance": "gatherer-2"}),
}

UNPROVOKABLE: dict[str, str] = {
    "ReconcileNotRunning": "needs 36 h without a completed kalshi-data reconcile run (a daily job); "
                           "alerts/tests/reconcile.test.yml shows it firing",
    "ReconcileMissingTrades": "needs a reconcile run (with its fleet-wide comparison and fix pass) "
                              "whose gatherer backfill cannot bring the trades in; "
                              "tests/kalshi_data/test_reconcile.py covers the metric, "
                              "alerts/tests/reconcile.test.yml the rule",
    "DiskUsageHigh": "needs a filesystem over 80 % full for node exporter to report; filling a "
                     "shared machine's disk is not a test",
    "RetentionBlocked": "needs an expired daily partition (retention keeps >= 1 day) that a consumer "
                        "has not acknowledged, for 24h (24 min even with the time factor)",
    "PollCycleApproachingLimit": "needs one REST snapshot cycle longer than 720 s (80 % of the "
                                 "production 900 s interval): over twelve minutes by definition",
    "HighFetchErrorRate": "poller_fetch_errors_total counts a failed batch request (up to 100 markets, "
                          "after ~26 s of retries) while poller_snapshots_fetched_total counts markets, "
                          "so > 5 % over 10m needs far more failed cycles than a run holds (50 markets: "
                          "one good cycle outweighs 2.6 failed ones)",
    "NoSideConventionMismatch": "the simulator fixes how it treats use_yes_price when it starts "
                                "(ws_use_yes_price_param), and this run's one simulator honours it; the "
                                "poller's detection is tested in tests/gatherer/test_kalshi_rules.py "
                                "(R7) and the rule by promtool (alerts/tests)",
    "BackfillWindowStale": "needs a trade backfill window pending for 600 s of wall clock (a threshold on "
                           "backfill_oldest_pending_seconds, which the time factor does not shorten): REST "
                           "trades failing for over ten minutes, longer than this whole run; the gauge is "
                           "tested in tests/gatherer/test_recovery.py and the rule by promtool (alerts/tests)",
    "OrderbookResyncStuck": "needs one book dirty for 120 s of wall clock with every recovery step failing on "
                            "that gatherer: get_snapshot and the resubscribe unanswered (the subscribe timeout "
                            "then reconnects the socket, whose fresh snapshots end the resync) and REST "
                            "snapshots failing, which the simulator can only fail for every client at once "
                            "(stopping the other faults' pollers); the state machine is tested in "
                            "tests/gatherer/test_recovery.py, the rule by promtool (alerts/tests)",
    "WriterSpoolDamaged": "needs a spool segment damaged on disk between its write and its read-back (a "
                          "gatherer stopped with rows spooled, a byte of the file changed, the gatherer "
                          "restarted); tested in tests/gatherer/test_spool.py and by promtool (alerts/tests)",
}


# --------------------------------------------------------------------------------------------
# The loop: Prometheus, Alertmanager's webhook, and what each fault measured
# --------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    alert: str
    fault: str
    fired_after_s: float | None = None
    labels: dict[str, str] = field(default_factory=dict)
    receivers: list[str] = field(default_factory=list)
    resolved_after_s: float | None = None  # seconds from recovery to resolved
    stopped_growing: str | None = None  # for window-bound alerts: the counter checked after recovery
    error: str | None = None


class Loop:
    def __init__(self, fleet: Fleet, info: dict[str, Any], hook: WebhookReceiver, workdir: Path,
                 s3: str) -> None:
        self.fleet = fleet
        self.info = info
        self.hook = hook
        self.workdir = workdir
        self.s3 = s3
        self.prom = info["monitoring"]["prometheus_url"]
        self.procs = info["processes"]
        self.dsn = {name: d["dsn"] for name, d in info["databases"].items()}
        self.severity = {r["alert"]: r["labels"]["severity"] for r in alert_rules()}
        self.outcomes = {name: Outcome(name, e.fault) for name, e in EXPECT.items()}
        self.lock = threading.Lock()
        self.client = httpx.Client(timeout=10)
        # set once production_outage has restarted production: exports read production, and the
        # archive chain runs alongside that outage
        self.production_back = threading.Event()

    # --- Prometheus ---------------------------------------------------------------------------
    def query(self, expr: str) -> list[dict[str, Any]]:
        r = self.client.get(f"{self.prom}/api/v1/query", params={"query": expr})
        doc = r.json()
        assert doc.get("status") == "success", f"{expr}: {doc}"
        return list(doc["data"]["result"])

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, Any]]:
        want = EXPECT[name].labels if name in EXPECT else {}
        doc = self.client.get(f"{self.prom}/api/v1/alerts").json()
        return [a for a in doc["data"]["alerts"]
                if a["labels"].get("alertname") == name and a["state"] == state
                and all(a["labels"].get(k) == v for k, v in want.items())]

    # poll until truthy, failing with what it waited for (the acceptance test's helper)
    wait = staticmethod(wait_for)

    def fired(self, name: str, t0: float, timeout: float = 90) -> float:
        """Wait until ``name`` fires (with its EXPECT labels); record seconds since ``t0`` (time.time)."""
        out = self.outcomes[name]
        try:
            firing = self.wait(lambda: self.alerts(name), timeout, f"{name} firing")
        except AssertionError as exc:
            out.error = str(exc)
            raise
        out.fired_after_s = round(time.time() - t0, 1)
        out.labels = {k: v for k, v in firing[0]["labels"].items() if k not in ("alertname", "severity", "service")}
        print(f"[prometheus-loop] {name} firing {out.fired_after_s}s after {out.fault} {out.labels}", flush=True)
        # the fault holds until Alertmanager has notified: an alert that resolves within
        # group_wait is never sent, and a loaded machine can take that long
        self._notified(name)
        return out.fired_after_s

    def _notified(self, name: str) -> None:
        try:
            self.wait(lambda: self.hook.notifications(name, "firing"), 60, f"{name} at the webhook")
        except AssertionError as exc:
            self.outcomes[name].error = str(exc)
            return
        with self.lock:
            self.outcomes[name].receivers = sorted({n.receiver for n in self.hook.notifications(name, "firing")})

    def firing_names(self) -> set[str]:
        doc = self.client.get(f"{self.prom}/api/v1/alerts").json()
        return {a["labels"]["alertname"] for a in doc["data"]["alerts"] if a["state"] == "firing"}

    def resolved(self, name: str, t_recovered: float, timeout: float = 90) -> None:
        """Wait until no ``name`` alert (with its EXPECT labels) is pending or firing."""
        out = self.outcomes[name]
        try:
            self.wait(lambda: not self.alerts(name, "firing") and not self.alerts(name, "pending"), timeout,
                      f"{name} resolved")
        except AssertionError as exc:
            out.error = str(exc)
            raise
        out.resolved_after_s = round(time.time() - t_recovered, 1)
        print(f"[prometheus-loop] {name} resolved {out.resolved_after_s}s after recovery", flush=True)

    def settled(self, name: str, counter: str, t_recovered: float, expr: str | None = None,
                at_most: float = 0.0) -> None:
        """For an alert bound to a long window: after recovery the events behind it stop
        (``expr``, by default ``increase(counter[5s])``, is at most ``at_most`` for every series)."""
        expr = expr or f"increase({counter}[5s])"
        self.wait(lambda: (r := self.query(expr)) and all(float(s["value"][1]) <= at_most for s in r),
                  60, f"{expr} <= {at_most:g} after the fault behind {name}")
        self.outcomes[name].stopped_growing = f"{expr} <= {at_most:g}"
        print(f"[prometheus-loop] {name}: {expr} <= {at_most:g} {time.time() - t_recovered:.1f}s after recovery",
              flush=True)

    # --- the fleet ------------------------------------------------------------------------------
    def metric(self, proc: str, name: str) -> float:
        text = self.client.get(self.procs[proc]["metrics_url"]).text
        return sum(float(line.rpartition(" ")[2]) for line in text.splitlines()
                   if line and not line.startswith("#") and line.split("{", 1)[0].split(" ", 1)[0] == name)

    def sql(self, db: str, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.dsn[db], autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(statement, args)
            return cur.fetchall() if cur.description else []

    def key(self, gatherer: str) -> str:
        return str(self.procs[gatherer]["api_key_id"])

    def admin(self, gatherer: str, action: str, ticker: str) -> int | None:
        """POST an admin action; None when it did not answer in time (a fault may stall it)."""
        p = self.procs[gatherer]
        token = Path(p["admin_token_file"]).read_text().strip()
        try:
            return self.client.post(f"{p['admin_url']}/{action}", params={"ticker": ticker},
                                    headers={"Authorization": f"Bearer {token}"}, timeout=60).status_code
        except httpx.HTTPError:
            return None

    def export(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.production_back.wait(300), "production never came back from production_outage"
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
        env.pop("AWS_PROFILE", None)
        metrics = Path(self.info["monitoring"]["textfile_dir"]) / "kalshi-export.prom"
        return subprocess.run([*KALSHI_DATA, "export", "--dsn", self.dsn["production"], "--endpoint-url", self.s3,
                               "--metrics-file", str(metrics), "--table", "trades", "--allow-empty",
                               "--no-wait-for-sync", *args],
                              capture_output=True, text=True, timeout=120, env=env, check=False)


# --------------------------------------------------------------------------------------------
# Faults. Each provokes its alerts, waits for them, recovers, and waits for the resolutions
# that fit in the run. Faults in the same list of FAULT_SCHEDULE run one after another.
# --------------------------------------------------------------------------------------------
def gatherer_databases_down(lp: Loop) -> None:
    """gatherer-1's database stops (the deduplicator loses it: SingleGathererDown), then the other
    two (AllGatherersDown); every gatherer's writers fail meanwhile (HighWriterErrorRate)."""
    clusters = {g: lp.fleet.clusters.cluster(g) for g in GATHERERS}
    t0 = time.time()
    clusters["gatherer-1"].stop()
    lp.fired("SingleGathererDown", t0)
    t1 = time.time()
    for g in ("gatherer-2", "gatherer-3"):
        clusters[g].stop()
    lp.fired("AllGatherersDown", t1)
    lp.fired("HighWriterErrorRate", t0, timeout=240)
    for c in clusters.values():
        c.start()
    t_rec = time.time()
    for g in GATHERERS:
        lp.wait(lambda g=g: lp.metric(g, "writer_inserts_total") > 0, 90, f"{g} writing again")
    lp.resolved("AllGatherersDown", t_rec)
    lp.resolved("SingleGathererDown", t_rec)
    lp.settled("HighWriterErrorRate", "writer_errors_total", t_rec)


def production_outage(lp: Loop) -> None:
    cluster = lp.fleet.clusters.cluster("production")
    t0 = time.time()
    cluster.stop()
    try:
        lp.fired("ProductionRDSUnreachable", t0)
    finally:
        cluster.start()
        lp.production_back.set()
    t_rec = time.time()
    lp.resolved("ProductionRDSUnreachable", t_rec)


def deduplicator_rewind(lp: Loop) -> None:
    """The deduplicator is stopped, every gatherer's cursor reset (``--reset-cursor``), and started
    again: DeduplicatorDown while it is down, then a re-merge of everything that is all
    duplicates (HighDuplicateRate)."""
    config = lp.procs["deduplicator"]["config"]
    t0 = time.time()
    assert lp.fleet.stop_process("deduplicator") is None
    for g in GATHERERS:
        res = subprocess.run([*DEDUPLICATOR, "--config", config, "--reset-cursor", g], capture_output=True,
                             text=True, timeout=60, check=False)
        assert res.returncode == 0, res.stderr
    lp.fired("DeduplicatorDown", t0)
    t1 = time.time()
    lp.fleet.start_process("deduplicator")
    lp.resolved("DeduplicatorDown", t1)
    lp.fired("HighDuplicateRate", t0, timeout=120)
    # recovered once the re-read history is merged: the rule's ratio over a short window is
    # back under its threshold (with three gatherers about 2/3 of rows are duplicates)
    ratio = ("sum(increase(dedup_duplicates_total[10s])) / (sum(increase(dedup_duplicates_total[10s])) "
             "+ sum(increase(dedup_records_written_total[10s])))")
    lp.settled("HighDuplicateRate", "dedup_duplicates_total", t1, expr=ratio, at_most=0.8)


# Three tables x three gatherers = nine merge loops waiting for eight production connections;
# trades stays free for the archive faults' exports.
LOCKED_IN_PRODUCTION = ("orderbook_deltas", "orderbook_snapshots", "tickers")


def production_locked(lp: Loop) -> None:
    """Production answers but three busy tables are locked (a long migration, a stuck VACUUM
    FULL): the deduplicator's connections all wait (ConnectionPoolExhaustion), those backlogs age
    past 30 s (DeduplicatorSyncStalled) and past 300 s on every gatherer (SyncLagCritical)."""
    conn = psycopg.connect(lp.dsn["production"])
    try:
        conn.execute("LOCK TABLE " + ", ".join(LOCKED_IN_PRODUCTION) + " IN ACCESS EXCLUSIVE MODE")
        t0 = time.time()
        lp.fired("ConnectionPoolExhaustion", t0)
        lp.fired("DeduplicatorSyncStalled", t0)
        lp.fired("SyncLagCritical", t0, timeout=SYNC_LAG_CRITICAL_S + 90)
    finally:
        conn.rollback()
        conn.close()
    t_rec = time.time()
    for name in ("ConnectionPoolExhaustion", "SyncLagCritical", "DeduplicatorSyncStalled"):
        lp.resolved(name, t_rec, timeout=120)


def ticker_feed_stalled(lp: Loop) -> None:
    """The exchange stops sending gatherer-2 ticker frames; its sockets stay up (DataStale)."""
    key = lp.key("gatherer-2")
    lp.fleet.sim_fault("mute", channel="ticker", key_id=key)
    t0 = time.time()
    try:
        lp.fired("DataStale", t0, timeout=DATA_STALE_S + 90)
    finally:
        lp.fleet.sim_fault("mute", channel="ticker", key_id=key, on=False)
    t_rec = time.time()
    lp.resolved("DataStale", t_rec)


def sequence_gaps(lp: Loop) -> None:
    """Eleven orderbook sequence gaps on gatherer-2's sockets (the rule wants more than 10)."""
    key = lp.key("gatherer-2")
    t0 = time.time()
    for _ in range(11):
        before = lp.metric("gatherer-2", "conn_manager_sequence_gaps_total")
        lp.fleet.sim_fault("skip_seq", n=1, channel="orderbook_delta", key_id=key)
        lp.wait(lambda b=before: lp.metric("gatherer-2", "conn_manager_sequence_gaps_total") > b, 60,
                "gatherer-2 to see the gap", every=0.2)
    lp.fired("SequenceGapsDetected", t0)
    lp.settled("SequenceGapsDetected", 'conn_manager_sequence_gaps_total{instance="gatherer-2"}', time.time())


def subscription_errors(lp: Loop) -> None:
    """Kalshi ends every trade subscription with error 25 (slow consumer): no alert of its own,
    but the WebSocket Health "Subscribe errors" panel shows it (and the gatherers resubscribe)."""
    before = sum(lp.metric(g, "conn_manager_subscribe_errors_total") for g in GATHERERS)
    assert lp.fleet.sim_fault("slow_consumer", code=25, channel="trade") >= 1
    lp.wait(lambda: sum(lp.metric(g, "conn_manager_subscribe_errors_total") for g in GATHERERS) > before,
            60, "conn_manager_subscribe_errors_total to count the error 25s")


def socket_storm(lp: Loop) -> None:
    """gatherer-3's sockets are reset 16 times in a row (HighReconnectRate wants more than 15)."""
    key = lp.key("gatherer-3")
    t0 = time.time()
    for _ in range(16):
        before = lp.metric("gatherer-3", "conn_manager_reconnects_total")
        n = lp.fleet.sim_fault("drop_connections", mode="reset", key_id=key)
        lp.wait(lambda b=before, n=n: lp.metric("gatherer-3", "conn_manager_reconnects_total") >= b + n, 60,
                "gatherer-3 to reconnect", every=0.2)
    lp.fired("HighReconnectRate", t0)
    lp.settled("HighReconnectRate", 'conn_manager_reconnects_total{instance="gatherer-3"}', time.time())


def sockets_refused(lp: Loop) -> None:
    """gatherer-3's sockets are reset and the exchange refuses new ones for a while."""
    key = lp.key("gatherer-3")
    lp.fleet.sim_fault("refuse_connections", seconds=20)
    lp.fleet.sim_fault("drop_connections", mode="reset", key_id=key)
    t0 = time.time()
    lp.fired("AllWebSocketsDisconnected", t0, timeout=30)
    lp.fired("SingleRoleDown", t0, timeout=30)
    lp.fleet.sim_fault("refuse_connections", seconds=0)
    t_rec = time.time()
    lp.resolved("AllWebSocketsDisconnected", t_rec)
    lp.resolved("SingleRoleDown", t_rec)


def gatherer_tables_locked(lp: Loop) -> None:
    """Every table of gatherer-3's database is locked 45 s: its writers' flushes hang
    (HighFlushLatency), its small queues spill to its small on-disk spool until that is nearly
    full (WriterSpoolFilling) and then full, so the sockets wait (WriterBackpressure)."""
    ticker = lp.sql("gatherer-3", "SELECT ticker FROM markets ORDER BY ticker LIMIT 1")[0][0]
    conn = psycopg.connect(lp.dsn["gatherer-3"])
    try:
        conn.execute("LOCK TABLE " + ", ".join(SPECS) + " IN ACCESS EXCLUSIVE MODE")
        t0 = time.time()
        # fresh snapshots now (WS resync and REST poll): the snapshot writer, a few flushes a
        # minute, has one that hangs
        for action in ("resync", "poll-market"):
            threading.Thread(target=lp.admin, args=("gatherer-3", action, ticker), daemon=True).start()
        lp.fired("WriterSpoolFilling", t0, timeout=40)  # while the lock holds
        time.sleep(max(0.0, 45 - (time.time() - t0)))  # the lock's length is the fault
    finally:
        conn.rollback()
        conn.close()
    t_rec = time.time()
    lp.resolved("WriterSpoolFilling", t_rec)  # the spool replays and its segments go
    # both are measured when the blocked work completes: the hung flush's duration, and the
    # producers' blocked time, which the writer adds once the put returns
    lp.fired("WriterBackpressure", t0, timeout=60)
    lp.fired("HighFlushLatency", t0, timeout=60)
    lp.settled("WriterBackpressure", 'writer_backpressure_seconds_total{instance="gatherer-3"}', t_rec)
    slow = ('sum(increase(writer_flush_duration_seconds_count{instance="gatherer-3"}[5s])) - '
            'sum(increase(writer_flush_duration_seconds_bucket{instance="gatherer-3", le="2.5"}[5s]))')
    lp.settled("HighFlushLatency", "writer_flush_duration_seconds", t_rec, expr=slow)


def production_refuses_a_row(lp: Loop) -> None:
    """Production's schema drifts (a CHECK the gatherers lack) and gatherer-2 holds a tickers row
    it refuses: the deduplicator sets it aside in rejected_rows and moves on."""
    lp.sql("production", "ALTER TABLE tickers ADD CONSTRAINT loop_no_4242 CHECK (price IS DISTINCT FROM 4242)")
    now_us = time.time_ns() // 1000
    t0 = time.time()
    try:
        lp.sql("gatherer-2", "INSERT INTO tickers (ticker, exchange_ts, yes_bid, yes_ask, price, volume, "
                             "open_interest, dollar_volume, dollar_open_interest, content_hash, received_at) "
                             "VALUES ('KXLOOP-POISON', %s, 4200, 4300, 4242, 0, 0, 0, 0, %s, %s)",
               (now_us // 1000 * 1000, uuid.uuid4().int >> 66, now_us))
        lp.fired("DeduplicatorRowsRejected", t0)
        assert lp.sql("production", "SELECT count(*) FROM rejected_rows WHERE table_name = 'tickers' "
                                    "AND payload::jsonb->>'ticker' = 'KXLOOP-POISON'")[0][0] == 1
    finally:
        lp.sql("production", "ALTER TABLE tickers DROP CONSTRAINT IF EXISTS loop_no_4242")
    lp.settled("DeduplicatorRowsRejected", "dedup_rejected_rows_total", time.time())


def gatherer_clock_skew(lp: Loop) -> None:
    """The exchange's Date header runs 4 s ahead of gatherer-2's clock (its key only; 4 s is
    within the signature window, so requests still pass): GathererClockSkew."""
    key = lp.key("gatherer-2")
    t0 = time.time()
    lp.fleet.sim_fault("clock_skew", ms=4000, key_id=key)
    try:
        lp.fired("GathererClockSkew", t0)
    finally:
        lp.fleet.sim_fault("clock_skew", ms=0, key_id=key)
    lp.resolved("GathererClockSkew", time.time())


def default_partition_row(lp: Loop) -> None:
    """A trade dated 2001 reaches gatherer-2's trades: no daily partition, so it sits in DEFAULT."""
    tid = str(uuid.uuid4())
    now_us = time.time_ns() // 1000
    t0 = time.time()
    lp.sql("gatherer-2", "INSERT INTO trades (trade_id, ticker, exchange_ts, yes_price, no_price, count, "
                         "taker_side, source, received_at) VALUES (%s, 'KXLOOP-DEFAULT', 978307200000000, "
                         "5000, 5000, 1, 'yes', 'rest', %s)", (tid, now_us))
    lp.fired("DefaultPartitionNotEmpty", t0)
    lp.sql("gatherer-2", "DELETE FROM trades_default WHERE trade_id = %s", (tid,))
    t_rec = time.time()
    lp.resolved("DefaultPartitionNotEmpty", t_rec)


def partition_names_taken(lp: Loop) -> None:
    """Plain tables take the names of gatherer-1's future trades partitions (a restore gone wrong):
    ensure_partitions() skips names that exist, so only today's and tomorrow's partitions are
    attached (PartitionsRunningOut: fewer than 2 days ahead). Dropping them lets it recreate."""
    future = [r[0] for r in lp.sql("gatherer-1", """
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'trades'::regclass AND c.relname ~ '_p\\d{8}$'
           AND to_date(substring(c.relname FROM '_p(\\d{8})$'), 'YYYYMMDD') > current_date + 1""")]
    assert len(future) >= 2, future
    t0 = time.time()
    # one transaction: the upkeep never sees the names free
    lp.sql("gatherer-1", "".join(f"DROP TABLE {n}; CREATE TABLE {n} (note text);" for n in future))
    lp.fired("PartitionsRunningOut", t0)
    lp.sql("gatherer-1", "".join(f"DROP TABLE {n};" for n in future))
    t_rec = time.time()
    lp.resolved("PartitionsRunningOut", t_rec)


def rejected_rows(lp: Loop) -> None:
    """gatherer-1's database refuses tickers rows for a few seconds (a check constraint trigger):
    the writer moves them to rejected_rows (WriterRowsRejected)."""
    lp.sql("gatherer-1", """
        CREATE FUNCTION loop_reject() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'rejected by the alert test' USING ERRCODE = 'check_violation'; END $$;
        CREATE TRIGGER loop_reject BEFORE INSERT ON tickers FOR EACH ROW EXECUTE FUNCTION loop_reject();""")
    t0 = time.time()
    try:
        lp.fired("WriterRowsRejected", t0)
    finally:
        lp.sql("gatherer-1", "DROP TRIGGER loop_reject ON tickers; DROP FUNCTION loop_reject()")
    lp.settled("WriterRowsRejected", 'writer_rejected_rows_total{instance="gatherer-1"}', time.time())


def archive_upload_fails(lp: Loop) -> None:
    """An export whose bucket does not exist: S3 errors (S3UploadFailure, ExportErrorRate); the
    next run, to the right bucket, succeeds."""
    t0 = time.time()
    res = lp.export("--day", "yesterday", "--bucket", "no-such-archive-bucket")
    assert res.returncode == 1, res.stdout + res.stderr
    lp.fired("S3UploadFailure", t0)
    lp.fired("ExportErrorRate", t0)
    res = lp.export("--day", "yesterday", "--bucket", ARCHIVE_BUCKET)
    assert res.returncode == 0, res.stdout + res.stderr
    t_rec = time.time()
    lp.settled("S3UploadFailure", "export_errors_total", t_rec, expr='increase(export_errors_total{type="s3"}[10s])')
    lp.settled("ExportErrorRate", "export_errors_total", t_rec, expr="increase(export_errors_total[10s])")


def archive_behind(lp: Loop) -> None:
    """The newest archived day is four days old (ExportLagWarning: > 36 h); exporting yesterday
    catches up."""
    bucket = ARCHIVE_BUCKET
    boto3.client("s3", endpoint_url=lp.s3, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    old = (datetime.now(UTC).date() - timedelta(days=4)).isoformat()
    t0 = time.time()
    res = lp.export("--day", old, "--bucket", bucket)
    assert res.returncode == 0, res.stdout + res.stderr
    lp.fired("ExportLagWarning", t0)
    res = lp.export("--day", (date.today() - timedelta(days=1)).isoformat(), "--bucket", bucket)
    assert res.returncode == 0, res.stdout + res.stderr
    lp.resolved("ExportLagWarning", time.time())


def rest_outage(lp: Loop) -> None:
    """Kalshi's REST API answers 503 to everything for a while: snapshot polls fail
    (NoMarketsPolled) and the registry's reconcile keeps retrying (MarketRegistryReconciling)."""
    t0 = time.time()
    lp.fleet.sim_fault("rest_5xx", n=100_000, status=503)
    try:
        lp.fired("NoMarketsPolled", t0, timeout=120)
        lp.fired("MarketRegistryReconciling", t0, timeout=120)
    finally:
        lp.fleet.sim_fault("rest_5xx", n=-100_000)  # cancels what is still pending
    t_rec = time.time()
    lp.resolved("NoMarketsPolled", t_rec, timeout=120)
    lp.resolved("MarketRegistryReconciling", t_rec, timeout=120)


# Each inner tuple runs in its own thread, in order; the tuples run in parallel.
FAULT_SCHEDULE: tuple[tuple[Callable[[Loop], None], ...], ...] = (
    (gatherer_databases_down, default_partition_row, rejected_rows, partition_names_taken),
    # production_refuses_a_row alters production's tickers: not while production is locked
    (production_outage, deduplicator_rewind, production_locked, production_refuses_a_row),
    (ticker_feed_stalled,),
    (sequence_gaps, gatherer_clock_skew),
    # subscription_errors ends every trade subscription: not while sockets are being counted
    (socket_storm, sockets_refused, gatherer_tables_locked, subscription_errors),
    # archive_behind first: its successful run writes export_errors_total{type="s3"} 0, so the
    # failing run's 1 is an increase (a series born at 1 is invisible to increase()).
    # rest_outage after them: a REST outage would also fail gatherer_tables_locked's poll-market
    (archive_behind, archive_upload_fails, rest_outage),
)


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------
def test_every_alert_is_provoked_or_explained() -> None:
    """The coverage contract, checked without a fleet: EXPECT + UNPROVOKABLE == the rule files."""
    defined = {r["alert"] for r in alert_rules()}
    assert not set(EXPECT) & set(UNPROVOKABLE)
    missing = sorted(defined - set(EXPECT) - set(UNPROVOKABLE))
    assert not missing, f"alerts neither provoked by this test nor listed as unprovokable: {missing}"
    assert not (set(EXPECT) | set(UNPROVOKABLE)) - defined, "entries for alerts that no longer exist"
    scheduled = {f.__name__ for chain in FAULT_SCHEDULE for f in chain}
    assert {e.fault for e in EXPECT.values()} <= scheduled


def dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for f in sorted((REPO / "grafana" / "dashboards").glob("*.json")):
        dash = json.loads(f.read_text())
        stack = list(dash["panels"])
        while stack:
            p = stack.pop(0)
            stack.extend(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((dash["title"], p["title"], substitute_grafana_variables(t["expr"], DASHBOARD_VARIABLES)))
    return out


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_alerts_fire_reach_alertmanager_and_resolve(moto_endpoint: str, tmp_path: Path) -> None:
    for tool in ("prometheus", "amtool", "prometheus-node-exporter"):
        require_tool(tool)
    t_start = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="kalshi-prometheus-loop-"))
    os.chmod(workdir, 0o755)
    markers = [str(workdir)]
    report: dict[str, Any] = {}
    try:
        with WebhookReceiver() as hook:
            plan = make_plan(workdir, preset="tiny", fast_pg=True, monitoring=True)
            assert plan.monitoring is not None
            plan = dataclasses.replace(
                plan,
                monitoring=dataclasses.replace(plan.monitoring, scrape_interval_s=SCRAPE_S,
                                               evaluation_interval_s=SCRAPE_S, time_factor=TIME_FACTOR,
                                               webhook_url=hook.url),
                gatherer_overrides={
                    # partition gauges refreshed every few seconds instead of hourly
                    **{g: {"retention": {"interval_s": 3.0}} for g in GATHERERS},
                    # small queues, so a 45 s database lock fills them (WriterBackpressure)
                    # ... and a small on-disk spool behind them, so it fills too (WriterSpoolFilling)
                    "gatherer-3": {"retention": {"interval_s": 3.0},
                                   "writer": {"batch_size": 50, "queue_max_rows": 100},
                                   "spool": {"max_bytes": 65536}},
                    # frequent snapshot cycles, so a REST outage empties one (NoMarketsPolled)
                    "gatherer-1": {"retention": {"interval_s": 3.0}, "poller": {"interval_s": 10.0}},
                })
            with Fleet(plan, Environment.from_os().env, ready_timeout=180) as fleet:
                info = fleet.start()
                markers += fleet.markers()
                lp = Loop(fleet, info, hook, workdir, moto_endpoint)
                lp.wait(lambda: len(lp.query('up{job=~"kalshi-.*"} == 1')) == 4, 60, "every target scraped")
                lp.wait(lambda: lp.query("sum(writer_inserts_total) > 0"), 60, "rows written")
                t_faults = time.monotonic()
                failures: list[str] = []

                def chain(faults: tuple[Callable[[Loop], None], ...]) -> None:
                    for f in faults:
                        try:
                            f(lp)
                        except Exception:  # noqa: BLE001 (every fault's failure is reported, not only the first)
                            failures.append(f"{f.__name__}: {traceback.format_exc(limit=3)}")

                with ThreadPoolExecutor(len(FAULT_SCHEDULE)) as pool:
                    list(pool.map(chain, FAULT_SCHEDULE))
                faults_s = time.monotonic() - t_faults
                dead = fleet.dead_processes()
                firing_before = lp.firing_names()
                view = _live_view(info)
                # what fired throughout the view's rendering must be on it
                firing_throughout = firing_before & lp.firing_names()

                # every dashboard panel reads data from this Prometheus, after the faults
                empty = [(d, p, e) for d, p, e in dashboard_queries() if not lp.query(e)]
                report = {
                    "time_factor": TIME_FACTOR, "scrape_and_evaluation_interval_s": SCRAPE_S,
                    "fault_phase_s": round(faults_s, 1),
                    "alerts": {n: dataclasses.asdict(o) for n, o in sorted(lp.outcomes.items())},
                    "unprovokable": UNPROVOKABLE, "empty_panels": empty,
                }
                notes = fleet.stop()
        report["wall_clock_s"] = round(time.monotonic() - t_start, 1)
    finally:
        leftovers = find_leftovers(markers)
        (tmp_path / "prometheus_loop_report.json").write_text(json.dumps(report, indent=2) + "\n")
        _print_table(report)
        shutil.rmtree(workdir, ignore_errors=True)
    assert not failures, "\n".join(failures)
    assert not dead, dead
    assert notes == [], notes
    assert leftovers == [], leftovers
    for name, o in lp.outcomes.items():
        want = {"critical": ["chat", "pager"]}.get(lp.severity[name], ["chat"])
        assert o.fired_after_s is not None, f"{name} never fired"
        assert o.receivers == want, f"{name} reached {o.receivers}, expected {want}: {o.error}"
        if EXPECT[name].resolve is None:
            assert o.resolved_after_s is not None, f"{name} did not resolve"
        else:
            assert o.stopped_growing, f"{name}: its counter kept growing after recovery"
    assert not empty, f"dashboard panels with no data: {empty}"
    # the demo's live view lists what is still firing (alerts on long windows, see EXPECT)
    assert firing_throughout, "nothing was firing after the faults: the live view check needs an alert"
    # the view lists ten (critical first, then by name; "... and N more"): the first is always shown
    first = min(firing_throughout, key=lambda n: (lp.severity.get(n) != "critical", n))
    assert first in view and "firing" in view, f"{first} firing but not on the live view:\n{view}"


def _live_view(info: dict[str, Any]) -> str:
    """The demo's live status screen for this fleet, as text."""
    from rich.console import Console

    from kalshi_data.fleet.status import StatusPoller, render

    poller = StatusPoller(info)
    try:
        snap = poller.poll()
    finally:
        poller.close()
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=200, file=sink)
        console.print(render(snap, info, snap.at))
    return console.export_text()


def _print_table(report: dict[str, Any]) -> None:
    rows = report.get("alerts", {})
    print("\n[prometheus-loop] alert                       fault                      fired s  resolved s  receivers")
    for name, o in rows.items():
        res = o["resolved_after_s"] if o["resolved_after_s"] is not None else (EXPECT[name].resolve or "-")
        print(f"[prometheus-loop] {name:28} {o['fault']:26} {o['fired_after_s']!s:>7}  {res!s:>10}  "
              f"{','.join(o['receivers'])}")
    for name, why in UNPROVOKABLE.items():
        print(f"[prometheus-loop] {name:28} not provoked: {why}")
    for dash, panel, expr in report.get("empty_panels", []):
        print(f"[prometheus-loop] EMPTY PANEL {dash} / {panel}: {expr}")
    print(f"[prometheus-loop] fault phase {report.get('fault_phase_s')} s, wall clock {report.get('wall_clock_s')} s",
          flush=True)

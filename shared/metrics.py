"""Every Prometheus metric the services export, on an explicit registry.

Names are exactly those of ``observability.md`` (alerts, dashboards and the runbook grep for them),
plus a few the hardening rules need (``writer_rejected_rows_total``, partition health).
Each class creates its metrics on the ``CollectorRegistry`` it is given and nothing registers on
``prometheus_client.REGISTRY``, so several gatherers (or a gatherer and a deduplicator) can run in
one test process, and a test reads its own registry with ``get_sample_value``.

No metric has a per-market label: a million markets would be a million series.

Every label combination the code knows at start is created at 0 when the process starts
(``GathererMetrics.init_labels``, ``DeduplicatorMetrics.init_labels``): /metrics lists each series
from the first scrape, so the runbook's greps find ``writer_errors_total`` before the first error
and ``rate()``/``increase()`` alerts see the first error instead of a series born at 1. The label
values are the constants below; tests/shared/test_metrics.py checks the code uses no other.
Gauges that carry a measurement (lags, timestamps, per-socket state) are not pre-set: a 0 there
would claim something no one measured.

Usage::

    registry = CollectorRegistry()
    m = GathererMetrics(registry)
    m.writer_inserts_total.labels(writer="trades").inc(500)
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from shared.heap import GcMetrics

# ---- known label values ---------------------------------------------------------------------
WS_ROLES = ("ticker", "trade", "lifecycle", "orderbook")  # gatherer/connection.py ROLES
WS_CHANNELS = ("ticker", "trade", "market_lifecycle_v2", "orderbook_delta")
# shared/db.py error_type(): writer_errors_total{type}, dedup_errors_total{type}
DB_ERROR_TYPES = ("connection", "constraint", "timeout", "other")
# deduplicator/sync.py: a gatherer database refused for its identity or schema, a failed ack
DEDUP_ERROR_TYPES = (*DB_ERROR_TYPES, "identity", "schema", "ack")
# gatherer/connection.py: _error_kind() (handshake_<HTTP status> is created when seen) + the rest
WS_ERROR_TYPES = ("auth", "closed", "reset", "closed_error", "handshake", "timeout", "refused", "network",
                  "internal", "ping_timeout", "silent", "subscribe_timeout")
# Kalshi's WebSocket error codes (kalshi-protocol.md 4.3; 6, 16, 17 retired)
KALSHI_WS_ERROR_CODES = tuple(str(c) for c in (*range(1, 6), *range(7, 16), *range(18, 29)))
# market_lifecycle_v2 event_type (kalshi-protocol.md) and the other lifecycle kinds
LIFECYCLE_TYPES = ("created", "activated", "deactivated", "close_date_updated", "determined", "settled",
                   "price_level_structure_updated", "metadata_updated", "event_lifecycle", "event_fee_update")
# Every REST path template the gatherer calls (the endpoint label of the REST metrics)
REST_ENDPOINTS = ("/series", "/events", "/markets", "/exchange/status", "/account/limits", "/account/endpoint_costs",
                  "/historical/cutoff",
                  "/markets/orderbooks", "/markets/{ticker}/orderbook", "/markets/trades", "/historical/trades")
# rest_requests_total{status}: the outcomes that are not an HTTP status, plus success and 429
REST_STATUSES = ("200", "429", "timeout", "error", "bad_body")
BACKFILL_REASONS = ("startup", "sweep", "reconnect", "seq_gap", "admin")
# gatherer/router.py: why a book was queued for a resync (resync_requests_total{reason})
RESYNC_REASONS = ("no_snapshot", "negative_level", "seq_gap", "rejected_frame", "book_mismatch", "admin")
# gatherer/resync.py: the steps of the resync state machine, and what ended a resync
RESYNC_STEPS = ("get_snapshot", "resubscribe", "rest_snapshot")
RESYNC_ENDINGS = (*RESYNC_STEPS, "reconnect", "abandoned")

# Flushes of a 10k-row COPY take ~5-50 ms locally; RDS pages up to a few seconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000)


def add_process_collectors(registry: CollectorRegistry) -> GcMetrics:
    """Attach process/GC/platform collectors (process_resident_memory_bytes and friends) and the
    GC pause histogram; returns the latter for the heap policy (shared/heap.py)."""
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    return GcMetrics(registry)


class DbPoolMetrics:
    """``db_pool_*{database}``: pool occupancy, shared by every process that owns a pool."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.db_pool_connections_in_use = Gauge(
            "db_pool_connections_in_use", "Connections checked out of the pool", ["database"], registry=r)
        self.db_pool_connections_max = Gauge(
            "db_pool_connections_max", "Pool size limit", ["database"], registry=r)
        self.db_pool_requests_waiting = Gauge(
            "db_pool_requests_waiting", "Callers waiting for a pooled connection", ["database"], registry=r)
        self.db_pool_errors_total = Counter(
            "db_pool_errors_total", "Connection attempts that failed", ["database"], registry=r)
        # {database}: "gatherer" from a gatherer (its own database), "production" from the
        # deduplicator, so the partition alerts cover both and say which.
        self.db_default_partition_rows = Gauge(
            "db_default_partition_rows", "Rows sitting in a table's DEFAULT partition", ["database", "table"],
            registry=r)
        self.db_partitions_ahead_days = Gauge(
            "db_partitions_ahead_days", "Days of partitions created ahead of today", ["database", "table"],
            registry=r)


class GathererMetrics(DbPoolMetrics):
    """All gatherer metrics (observability.md, "Gatherer")."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        r = registry
        # registry / markets
        self.gatherer_markets_active = Gauge(
            "gatherer_markets_active", "Open markets this gatherer is subscribed to", registry=r)
        self.gatherer_websocket_connections = Gauge(
            "gatherer_websocket_connections", "WebSocket connections currently open", registry=r)
        self.gatherer_info = Gauge(
            "gatherer_info", "Constant 1, labelled with the gatherer id and version",
            ["gatherer_id", "version"], registry=r)
        self.market_registry_markets_total = Gauge(
            "market_registry_markets_total", "Markets known to the registry", registry=r)
        self.market_registry_active_markets = Gauge(
            "market_registry_active_markets", "Markets in an open/active state", registry=r)
        self.market_registry_lifecycle_events_total = Counter(
            "market_registry_lifecycle_events_total", "Lifecycle frames applied", ["type"], registry=r)
        self.market_registry_reconcile_duration_seconds = Histogram(
            "market_registry_reconcile_duration_seconds", "Full or incremental REST sync duration",
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600), registry=r)
        self.market_registry_rest_errors_total = Counter(
            "market_registry_rest_errors_total", "REST errors while syncing markets", ["endpoint"], registry=r)
        self.market_registry_last_sync_timestamp = Gauge(
            "market_registry_last_sync_timestamp", "Unix time of the last completed REST sync", registry=r)
        self.market_registry_exchange_active = Gauge(
            "market_registry_exchange_active", "1 when the exchange reports itself active", registry=r)
        self.market_registry_reconciling = Gauge(
            "market_registry_reconciling", "1 while a REST reconcile is running", registry=r)
        self.market_registry_change_notices_dropped_total = Counter(
            "market_registry_change_notices_dropped_total",
            "Open/close notices dropped on a full queue (the periodic shard check repairs them)",
            registry=r)
        # websocket clients
        self.ws_client_connected = Gauge(
            "ws_client_connected", "1 when the connection is open and subscribed", ["conn_id", "role"], registry=r)
        self.ws_client_messages_received_total = Counter(
            "ws_client_messages_received_total", "Frames received", ["role"], registry=r)
        self.ws_client_bytes_received_total = Counter(
            "ws_client_bytes_received_total", "Bytes received", ["role"], registry=r)
        self.ws_client_errors_total = Counter(
            "ws_client_errors_total", "WebSocket errors by kind", ["type"], registry=r)
        self.ws_client_last_ping_timestamp = Gauge(
            "ws_client_last_ping_timestamp", "Unix time of the last ping/pong seen", ["conn_id"], registry=r)
        self.ws_client_last_message_timestamp = Gauge(
            "ws_client_last_message_timestamp", "Unix time of the last frame per role", ["role"], registry=r)
        # connection manager
        self.conn_manager_connections_total = Gauge(
            "conn_manager_connections_total", "Configured WebSocket connections", registry=r)
        self.conn_manager_connections_healthy = Gauge(
            "conn_manager_connections_healthy", "Healthy connections per role", ["role"], registry=r)
        self.conn_manager_subscriptions_total = Gauge(
            "conn_manager_subscriptions_total", "Active channel subscriptions", registry=r)
        self.conn_manager_markets_total = Gauge(
            "conn_manager_markets_total", "Markets assigned to orderbook connections", registry=r)
        self.conn_manager_sequence_gaps_total = Counter(
            "conn_manager_sequence_gaps_total", "Sequence gaps detected", ["role"], registry=r)
        self.conn_manager_reconnects_total = Counter(
            "conn_manager_reconnects_total", "Reconnects", ["role"], registry=r)
        self.conn_manager_subscribe_errors_total = Counter(
            "conn_manager_subscribe_errors_total", "Error frames answering a command",
            ["channel", "error_code"], registry=r)
        # Kalshi's unpublished WebSocket limits, as learnt from its answers (issue #14)
        self.conn_manager_markets_per_subscription = Gauge(
            "conn_manager_markets_per_subscription", "Markets we put in one orderbook "
            "subscription (lowered towards the exchange's limit on error 26)", registry=r)
        self.conn_manager_commands_per_second = Gauge(
            "conn_manager_commands_per_second", "Commands per second we send on one socket "
            "(lowered on error 27)", registry=r)
        self.conn_manager_parked_connections = Gauge(
            "conn_manager_parked_connections", "Orderbook sockets not opened: over the per-key "
            "socket limit (configured, or learnt from handshake 429s)", registry=r)
        self.conn_manager_quarantined_markets = Gauge(
            "conn_manager_quarantined_markets", "Open markets the exchange refuses to subscribe, "
            "waiting for a lifecycle change or the retry timer", registry=r)
        self.conn_manager_quarantine_total = Counter(
            "conn_manager_quarantine_total", "Markets quarantined after a refused subscribe "
            "(named: the error named them; bisected: found by splitting the command)",
            ["reason"], registry=r)
        # router
        self.router_messages_routed_total = Counter(
            "router_messages_routed_total", "Frames decoded and routed", ["type"], registry=r)
        self.router_parse_errors_total = Counter(
            "router_parse_errors_total", "Frames rejected by the decoder", ["reason"], registry=r)
        self.router_unknown_messages_total = Counter(
            "router_unknown_messages_total", "Frames of an unknown type", registry=r)
        self.router_duplicates_total = Counter(
            "router_duplicates_total", "Frames dropped as duplicate/old seq", ["role"], registry=r)
        self.router_delta_timestamps_missing_total = Counter(
            "router_delta_timestamps_missing_total", "Orderbook deltas without ts/ts_ms, stored "
            "with their receive time as exchange time", registry=r)
        # writers
        self.writer_inserts_total = Counter(
            "writer_inserts_total", "Rows committed", ["writer"], registry=r)
        self.writer_errors_total = Counter(
            "writer_errors_total", "Writer errors (connection, constraint, timeout, other)",
            ["writer", "type"], registry=r)
        self.writer_rejected_rows_total = Counter(
            "writer_rejected_rows_total", "Rows moved to rejected_rows", ["writer"], registry=r)
        self.writer_batch_size = Histogram(
            "writer_batch_size", "Rows per flushed batch", ["writer"], buckets=_BATCH_BUCKETS, registry=r)
        self.writer_flush_duration_seconds = Histogram(
            "writer_flush_duration_seconds", "Time to commit one batch", ["writer"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.writer_copy_fallbacks_total = Counter(
            "writer_copy_fallbacks_total", "Batches the database refused on the direct-COPY fast "
            "path (a duplicate or bad row), then written through staging", ["writer"], registry=r)
        self.writer_batch_duplicates_total = Counter(
            "writer_batch_duplicates_total", "Rows dropped before writing as repeats of an "
            "earlier row of the same batch (trades: the same trade_id, e.g. from two trade "
            "sockets)", ["writer"], registry=r)
        self.writer_queue_rows = Gauge(
            "writer_queue_rows", "Rows accepted but not yet committed", ["writer"], registry=r)
        self.writer_queue_max_rows = Gauge(
            "writer_queue_max_rows", "Queue bound in rows", ["writer"], registry=r)
        self.writer_backpressure_seconds_total = Counter(
            "writer_backpressure_seconds_total", "Time producers spent blocked on a full queue",
            ["writer"], registry=r)
        # on-disk spool (gatherer/spool.py): rows beyond the memory queue while the DB lags
        self.writer_spool_rows = Gauge(
            "writer_spool_rows", "Rows waiting in the on-disk spool", ["writer"], registry=r)
        self.writer_spool_bytes = Gauge(
            "writer_spool_bytes", "Disk bytes held by the on-disk spool", ["writer"], registry=r)
        self.writer_spool_max_bytes = Gauge(
            "writer_spool_max_bytes", "Configured bound of all spools together (spool.max_bytes)",
            registry=r)
        self.writer_spool_spilled_rows_total = Counter(
            "writer_spool_spilled_rows_total", "Rows written to the spool because the queue was full",
            ["writer"], registry=r)
        self.writer_spool_replayed_rows_total = Counter(
            "writer_spool_replayed_rows_total", "Rows read back from the spool, in order", ["writer"],
            registry=r)
        self.writer_spool_corrupt_chunks_total = Counter(
            "writer_spool_corrupt_chunks_total", "Spool chunks failing their checksum (skipped)",
            ["writer"], registry=r)
        # resync state machine (gatherer/resync.py)
        self.resync_requests_total = Counter(
            "resync_requests_total", "Books marked dirty and queued for a resync", ["reason"], registry=r)
        self.resync_steps_total = Counter(
            "resync_steps_total", "Resync steps taken (get_snapshot, resubscribe, rest_snapshot)",
            ["step"], registry=r)
        self.resync_completed_total = Counter(
            "resync_completed_total", "Resyncs completed (snapshot committed), by the step that did it",
            ["how"], registry=r)
        self.resync_dirty_books = Gauge(
            "resync_dirty_books", "Books waiting for a resync snapshot", registry=r)
        self.resync_oldest_dirty_seconds = Gauge(
            "resync_oldest_dirty_seconds", "How long the oldest waiting book has been dirty", registry=r)
        # poller, backfill, retention
        self.poller_snapshots_fetched_total = Counter(
            "poller_snapshots_fetched_total", "REST orderbook snapshots fetched", registry=r)
        self.poller_fetch_errors_total = Counter(
            "poller_fetch_errors_total", "REST orderbook fetch errors", registry=r)
        self.poller_markets_polled = Gauge(
            "poller_markets_polled", "Markets polled in the last cycle", registry=r)
        self.poller_poll_duration_seconds = Histogram(
            "poller_poll_duration_seconds", "Duration of one poll cycle",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800), registry=r)
        self.poller_book_mismatches_total = Counter(
            "poller_book_mismatches_total", "REST book differed from the WS-reconstructed book", registry=r)
        self.poller_no_side_convention_mismatches_total = Counter(
            "poller_no_side_convention_mismatches_total", "WS book's NO side equals the REST book's "
            "NO side mirrored (1 - price): the WebSocket changed its NO price convention "
            "(use_yes_price)", registry=r)
        self.backfill_trades_total = Counter(
            "backfill_trades_total", "Trades fetched by REST backfill", registry=r)
        self.backfill_requests_total = Counter(
            "backfill_requests_total", "Backfill requests", ["reason"], registry=r)
        self.backfill_pending_windows = Gauge(
            "backfill_pending_windows", "Trade backfill windows queued and not yet done", registry=r)
        self.backfill_oldest_pending_seconds = Gauge(
            "backfill_oldest_pending_seconds", "Age of the oldest pending trade backfill window",
            registry=r)
        self.backfill_failures_total = Counter(
            "backfill_failures_total", "Backfill attempts that failed (the window is retried)",
            registry=r)
        self.backfill_windows_done_total = Counter(
            "backfill_windows_done_total", "Backfill windows completed (trades committed)", registry=r)
        self.retention_blocked_partitions = Gauge(
            "retention_blocked_partitions", "Expired partitions kept because a consumer has not acknowledged",
            registry=r)
        self.retention_chunks_compressed_total = Counter(
            "retention_chunks_compressed_total", "TimescaleDB chunks compressed by the retention loop",
            ["table"], registry=r)
        self.retention_compression_blocked_chunks = Gauge(
            "retention_compression_blocked_chunks",
            "TimescaleDB chunks old enough to compress, kept uncompressed because a consumer has not acknowledged",
            registry=r)
        self.retention_trade_ids_pruned_total = Counter(
            "retention_trade_ids_pruned_total", "trade_ids guard rows deleted after their trades were dropped",
            registry=r)
        self.rest_requests_total = Counter(
            "rest_requests_total", "REST requests by endpoint and status class", ["endpoint", "status"],
            registry=r)
        self.rest_rate_limited_total = Counter(
            "rest_rate_limited_total", "429 answers received", registry=r)
        self.rest_clock_skew_seconds = Gauge(
            "rest_clock_skew_seconds", "Our clock minus the exchange's Date header (last answer)",
            registry=r)
        self.rest_tokens_spent_total = Counter(
            "rest_tokens_spent_total", "Tokens our requests were billed (Kalshi's cost per "
            "request, per item on batch endpoints)", ["bucket"], registry=r)
        self.rest_budget_tokens_per_second = Gauge(
            "rest_budget_tokens_per_second", "The key's token budget per second (from "
            "/account/limits, else the configured tier)", ["bucket"], registry=r)
        self.rest_budget_capacity_tokens = Gauge(
            "rest_budget_capacity_tokens", "The key's bucket capacity in tokens", ["bucket"],
            registry=r)
        self.rest_historical_cutoff_timestamp = Gauge(
            "rest_historical_cutoff_timestamp", "Kalshi's historical cutoff for trades (unix s): "
            "older trades are read from /historical/trades", registry=r)

    def init_labels(self, writers: Sequence[str], routed_types: Sequence[str] = (),
                    parse_reasons: Sequence[str] = (), retention_tables: Sequence[str] = ()) -> None:
        """Create every known label combination at 0 (see the module docstring); the caller
        passes what its own modules define (writer tables, routed frame types, decoder reasons,
        the event tables retention looks after)."""
        for t in retention_tables:
            self.retention_chunks_compressed_total.labels(table=t)
        for t in routed_types:
            self.router_messages_routed_total.labels(type=t)
        for r in parse_reasons:
            self.router_parse_errors_total.labels(reason=r)
        for w in writers:
            for t in DB_ERROR_TYPES:
                self.writer_errors_total.labels(writer=w, type=t)
            for family in (self.writer_inserts_total, self.writer_rejected_rows_total, self.writer_batch_size,
                           self.writer_flush_duration_seconds, self.writer_copy_fallbacks_total,
                           self.writer_backpressure_seconds_total, self.writer_batch_duplicates_total,
                           self.writer_spool_spilled_rows_total, self.writer_spool_replayed_rows_total,
                           self.writer_spool_corrupt_chunks_total):
                family.labels(writer=w)
        for role in WS_ROLES:
            for family in (self.ws_client_messages_received_total, self.ws_client_bytes_received_total,
                           self.conn_manager_sequence_gaps_total, self.conn_manager_reconnects_total,
                           self.router_duplicates_total):
                family.labels(role=role)
            self.conn_manager_connections_healthy.labels(role=role)
        for t in WS_ERROR_TYPES:
            self.ws_client_errors_total.labels(type=t)
        for channel in WS_CHANNELS:
            for code in KALSHI_WS_ERROR_CODES:
                self.conn_manager_subscribe_errors_total.labels(channel=channel, error_code=code)
        for t in LIFECYCLE_TYPES:
            self.market_registry_lifecycle_events_total.labels(type=t)
        for endpoint in REST_ENDPOINTS:
            self.market_registry_rest_errors_total.labels(endpoint=endpoint)
            for status in REST_STATUSES:
                self.rest_requests_total.labels(endpoint=endpoint, status=status)
        for reason in BACKFILL_REASONS:
            self.backfill_requests_total.labels(reason=reason)
        for reason in RESYNC_REASONS:
            self.resync_requests_total.labels(reason=reason)
        for step in RESYNC_STEPS:
            self.resync_steps_total.labels(step=step)
        for how in RESYNC_ENDINGS:
            self.resync_completed_total.labels(how=how)
        for reason in ("named", "bisected"):
            self.conn_manager_quarantine_total.labels(reason=reason)
        self.rest_tokens_spent_total.labels(bucket="read")


class DeduplicatorMetrics(DbPoolMetrics):
    """All deduplicator metrics (observability.md, "Deduplicator")."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry)
        r = registry
        self.dedup_sync_lag_seconds = Gauge(
            "dedup_sync_lag_seconds", "Age of the newest merged row while rows are pending; 0 when caught up",
            ["gatherer", "table"], registry=r)
        self.dedup_records_written_total = Counter(
            "dedup_records_written_total", "Rows inserted into production", ["table"], registry=r)
        self.dedup_duplicates_total = Counter(
            "dedup_duplicates_total", "Rows already present in production", ["table"], registry=r)
        self.dedup_duplicate_rate = Gauge(
            "dedup_duplicate_rate", "Duplicates / rows read over the last interval", registry=r)
        self.dedup_records_per_second = Gauge(
            "dedup_records_per_second", "Rows written per second over the last interval", registry=r)
        self.dedup_gatherer_health = Gauge(
            "dedup_gatherer_health", "1 when the gatherer database is reachable", ["gatherer"], registry=r)
        self.dedup_rds_connected = Gauge(
            "dedup_rds_connected", "1 when production is reachable", registry=r)
        self.dedup_page_duration_seconds = Histogram(
            "dedup_page_duration_seconds", "Time to merge one page", ["table"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.dedup_errors_total = Counter(
            "dedup_errors_total", "Errors by class", ["gatherer", "type"], registry=r)
        self.dedup_rows_read_total = Counter(
            "dedup_rows_read_total", "Rows read from gatherers", ["gatherer", "table"], registry=r)
        self.dedup_rejected_rows_total = Counter(
            "dedup_rejected_rows_total", "Rows production refused, set aside in its rejected_rows",
            ["gatherer", "table"], registry=r)

    def init_labels(self, gatherers: Sequence[str], tables: Sequence[str]) -> None:
        """Create every known label combination at 0 (see the module docstring)."""
        for table in tables:
            self.dedup_records_written_total.labels(table=table)
            self.dedup_duplicates_total.labels(table=table)
            self.dedup_page_duration_seconds.labels(table=table)
            for g in gatherers:
                self.dedup_rows_read_total.labels(gatherer=g, table=table)
                self.dedup_rejected_rows_total.labels(gatherer=g, table=table)
        for g in (*gatherers, "production"):
            for t in DEDUP_ERROR_TYPES:
                self.dedup_errors_total.labels(gatherer=g, type=t)


class ArchiveMetrics:
    """``export_*`` metrics of the Parquet archive."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.export_rows_total = Counter("export_rows_total", "Rows exported", ["table"], registry=r)
        self.export_bytes_total = Counter("export_bytes_total", "Parquet bytes uploaded", ["table"], registry=r)
        self.export_duration_seconds = Histogram(
            "export_duration_seconds", "Duration of one table-day export", ["table"],
            buckets=(1, 5, 15, 60, 300, 900, 1800, 3600), registry=r)
        self.export_errors_total = Counter(
            "export_errors_total", "Export errors", ["table", "type"], registry=r)
        self.export_lag_seconds = Gauge(
            "export_lag_seconds", "Age of the newest exported day's end", ["table"], registry=r)


class ReconcileMetrics:
    """``reconcile_*``: the daily reconciliation against Kalshi's trade history, written to a
    node-exporter textfile by ``kalshi-data reconcile --metrics-file`` (values of the last run).

    ``reconcile_last_success_timestamp`` is created only by ``succeeded()``: a failed run must
    leave the previous success time in the textfile, not overwrite it with 0."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self._registry = r
        self.reconcile_missing_trades = Gauge(
            "reconcile_missing_trades", "Trades Kalshi lists that production still lacks after the "
            "fix pass (last run)", registry=r)
        self.reconcile_found_missing_trades = Gauge(
            "reconcile_found_missing_trades", "Trades missing from production before the fix pass "
            "(last run)", registry=r)
        self.reconcile_fixed_trades = Gauge(
            "reconcile_fixed_trades", "Missing trades a gatherer backfill brought in (last run)", registry=r)
        self.reconcile_extra_trades = Gauge(
            "reconcile_extra_trades", "Production trades Kalshi does not list (last run)", registry=r)
        self.reconcile_mismatched_trades = Gauge(
            "reconcile_mismatched_trades", "Trades whose price, count or side differ (last run)", registry=r)
        self.reconcile_kalshi_trades = Gauge(
            "reconcile_kalshi_trades", "Trades Kalshi lists for the reconciled day (last run)", registry=r)
        self.reconcile_rest_tokens = Gauge(
            "reconcile_rest_tokens", "REST tokens the last run spent", registry=r)
        self.reconcile_duration_seconds = Gauge(
            "reconcile_duration_seconds", "Duration of the last run", registry=r)
        self.reconcile_day_timestamp = Gauge(
            "reconcile_day_timestamp", "Start of the day the last run reconciled (Unix seconds)", registry=r)

    def succeeded(self, at_s: float) -> None:
        Gauge("reconcile_last_success_timestamp", "When a reconciliation last completed (Unix "
              "seconds)", registry=self._registry).set(at_s)

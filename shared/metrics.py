"""Every Prometheus metric the services export, on an explicit registry.

Names are exactly those of ``observability.md`` (alerts, dashboards and the runbook grep for them),
plus a few the hardening rules need (``writer_rejected_rows_total``, partition health).
Each class creates its metrics on the ``CollectorRegistry`` it is given and nothing registers on
``prometheus_client.REGISTRY``, so several gatherers (or a gatherer and a deduplicator) can run in
one test process, and a test reads its own registry with ``get_sample_value``.

No metric has a per-market label: a million markets would be a million series.

Usage::

    registry = CollectorRegistry()
    m = GathererMetrics(registry)
    m.writer_inserts_total.labels(writer="trades").inc(500)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

# Flushes of a 10k-row COPY take ~5-50 ms locally; RDS pages up to a few seconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 25000, 50000)


def add_process_collectors(registry: CollectorRegistry) -> None:
    """Attach process/GC/platform collectors (process_resident_memory_bytes and friends)."""
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)


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
        self.db_default_partition_rows = Gauge(
            "db_default_partition_rows", "Rows sitting in a table's DEFAULT partition", ["table"], registry=r)
        self.db_partitions_ahead_days = Gauge(
            "db_partitions_ahead_days", "Days of partitions created ahead of today", ["table"], registry=r)


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
        # router
        self.router_messages_routed_total = Counter(
            "router_messages_routed_total", "Frames decoded and routed", ["type"], registry=r)
        self.router_parse_errors_total = Counter(
            "router_parse_errors_total", "Frames rejected by the decoder", ["reason"], registry=r)
        self.router_unknown_messages_total = Counter(
            "router_unknown_messages_total", "Frames of an unknown type", registry=r)
        self.router_duplicates_total = Counter(
            "router_duplicates_total", "Frames dropped as duplicate/old seq", ["role"], registry=r)
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
        self.rest_requests_total = Counter(
            "rest_requests_total", "REST requests by endpoint and status class", ["endpoint", "status"],
            registry=r)
        self.rest_rate_limited_total = Counter(
            "rest_rate_limited_total", "429 answers received", registry=r)
        self.rest_clock_skew_seconds = Gauge(
            "rest_clock_skew_seconds", "Our clock minus the exchange's Date header (last answer)",
            registry=r)


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

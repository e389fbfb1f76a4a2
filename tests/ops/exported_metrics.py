"""The metric names the kalshi-data processes export: the contract alerts/ and grafana/ rely on.

Every name here comes from `shared/spec/observability.md` plus the extras the code owners
committed to. `tests/ops/test_alerts.py` and `tests/ops/test_dashboards.py` check that every metric
referenced by a rule or a dashboard panel is in this table, and
`tests/ops/test_exported_metrics.py` checks that `shared/metrics.py` (`GathererMetrics`,
`DeduplicatorMetrics`, `ArchiveMetrics`, process collectors) creates each of them with the same
type, and tests/ops/test_live_metrics.py checks them against the /metrics of a running fleet.

Each entry maps the *family* name to its Prometheus type. For counters the family name is the
exposed sample name (prometheus-client appends `_total`; we spell it out). Histograms expose
`<name>_bucket`, `<name>_sum`, `<name>_count`. Label sets are documented beside each entry; no
metric carries a per-market (`ticker`) label.
"""

from __future__ import annotations

COUNTER = "counter"
GAUGE = "gauge"
HISTOGRAM = "histogram"

GATHERER: dict[str, str] = {
    "gatherer_markets_active": GAUGE,
    "gatherer_websocket_connections": GAUGE,  # sockets currently connected
    "market_registry_markets_total": GAUGE,
    "market_registry_active_markets": GAUGE,
    "market_registry_lifecycle_events_total": COUNTER,  # {type}
    "market_registry_reconcile_duration_seconds": HISTOGRAM,
    "market_registry_rest_errors_total": COUNTER,  # {endpoint}
    "market_registry_last_sync_timestamp": GAUGE,  # unix seconds of the last completed sync
    "market_registry_exchange_active": GAUGE,  # 1/0
    "market_registry_reconciling": GAUGE,  # 1 while a REST reconcile runs
    "ws_client_connected": GAUGE,  # {conn_id, role} 1/0
    "ws_client_messages_received_total": COUNTER,  # {role}
    "ws_client_bytes_received_total": COUNTER,  # {role}
    "ws_client_errors_total": COUNTER,  # {type}
    "ws_client_last_ping_timestamp": GAUGE,  # {conn_id} unix seconds
    "ws_client_last_message_timestamp": GAUGE,  # {role} unix seconds
    "conn_manager_connections_total": GAUGE,  # configured sockets
    "conn_manager_connections_healthy": GAUGE,  # {role}
    "conn_manager_subscriptions_total": GAUGE,
    "conn_manager_markets_total": GAUGE,
    "conn_manager_sequence_gaps_total": COUNTER,  # {role}
    "conn_manager_reconnects_total": COUNTER,  # {role}
    "conn_manager_subscribe_errors_total": COUNTER,  # {channel, error_code}
    "conn_manager_markets_per_subscription": GAUGE,  # learnt from error 26 (issue 14)
    "conn_manager_commands_per_second": GAUGE,  # learnt from error 27
    "conn_manager_parked_connections": GAUGE,  # orderbook sockets over the per-key limit
    "conn_manager_quarantined_markets": GAUGE,
    "conn_manager_quarantine_total": COUNTER,  # {reason}
    "router_messages_routed_total": COUNTER,  # {type}
    "router_parse_errors_total": COUNTER,  # {reason}
    "router_unknown_messages_total": COUNTER,
    "writer_inserts_total": COUNTER,  # {writer} rows written
    "writer_errors_total": COUNTER,  # {writer, type in connection|constraint|timeout|other}
    "writer_rejected_rows_total": COUNTER,  # {writer} rows sent to rejected_rows
    "writer_batch_size": HISTOGRAM,  # {writer} rows per flushed batch
    "writer_flush_duration_seconds": HISTOGRAM,  # {writer}
    "writer_queue_rows": GAUGE,  # {writer}
    "writer_backpressure_seconds_total": COUNTER,  # {writer}
    "poller_snapshots_fetched_total": COUNTER,
    "poller_fetch_errors_total": COUNTER,
    "poller_markets_polled": GAUGE,  # markets fetched in the last completed cycle
    "poller_poll_duration_seconds": HISTOGRAM,  # duration of each poll cycle
    "poller_book_mismatches_total": COUNTER,
    "poller_no_side_convention_mismatches_total": COUNTER,  # WS NO side mirrors REST (R7)
    "backfill_trades_total": COUNTER,
    "backfill_requests_total": COUNTER,  # {reason}
    "backfill_pending_windows": GAUGE,  # durable queue: windows not yet done
    "backfill_oldest_pending_seconds": GAUGE,
    "backfill_failures_total": COUNTER,
    "backfill_windows_done_total": COUNTER,
    "resync_requests_total": COUNTER,  # {reason}
    "resync_steps_total": COUNTER,  # {step in get_snapshot|resubscribe|rest_snapshot}
    "resync_completed_total": COUNTER,  # {how}
    "resync_dirty_books": GAUGE,
    "resync_oldest_dirty_seconds": GAUGE,
    "writer_spool_rows": GAUGE,  # {writer}
    "writer_spool_bytes": GAUGE,  # {writer}
    "writer_spool_max_bytes": GAUGE,  # spool.max_bytes, all writers together
    "writer_spool_spilled_rows_total": COUNTER,  # {writer}
    "writer_spool_replayed_rows_total": COUNTER,  # {writer}
    "writer_spool_corrupt_chunks_total": COUNTER,  # {writer}
    "rest_clock_skew_seconds": GAUGE,  # our clock minus the exchange's Date
    "retention_blocked_partitions": GAUGE,
    "retention_compression_blocked_chunks": GAUGE,  # TimescaleDB chunks kept uncompressed (unacked)
    "python_gc_pause_seconds": HISTOGRAM,  # {generation} shared/heap.py (gatherer dashboard)
}

# `db_pool_*{database}` in observability.md; exported by gatherer and deduplicator alike. The
# partition gauges come from a gatherer for its own database (database="gatherer") and from the
# deduplicator for production (database="production").
DATABASE: dict[str, str] = {
    "db_pool_connections_in_use": GAUGE,  # {database}
    "db_pool_connections_max": GAUGE,  # {database}
    "db_default_partition_rows": GAUGE,  # {database, table} rows in the DEFAULT partition
    "db_partitions_ahead_days": GAUGE,  # {database, table} days of partitions created ahead of now
}

DEDUPLICATOR: dict[str, str] = {
    "dedup_sync_lag_seconds": GAUGE,  # {gatherer, table}
    "dedup_records_written_total": COUNTER,  # {table}
    "dedup_duplicates_total": COUNTER,  # {table}
    "dedup_duplicate_rate": GAUGE,
    "dedup_records_per_second": GAUGE,
    "dedup_gatherer_health": GAUGE,  # {gatherer} 1 up / 0 down
    "dedup_rejected_rows_total": COUNTER,  # {gatherer, table} set aside in production's rejected_rows
    "dedup_rds_connected": GAUGE,  # 1/0
    "dedup_page_duration_seconds": HISTOGRAM,  # {table}
}

# `kalshi-data export` (a timer-driven oneshot) writes these through node-exporter's textfile
# collector, so they carry the exporting host's job/instance labels.
ARCHIVE: dict[str, str] = {
    "export_rows_total": COUNTER,  # {table}
    "export_bytes_total": COUNTER,  # {table}
    "export_duration_seconds": HISTOGRAM,  # {table}
    "export_errors_total": COUNTER,  # {table, type in s3|database|parquet|manifest}
    "export_lag_seconds": GAUGE,  # {table} age of the end of the newest exported day
}

# `kalshi-data reconcile` (kalshi-reconcile.timer on gatherer-1) writes these through
# node-exporter's textfile collector (shared/metrics.py ReconcileMetrics; values of the last run).
RECONCILE: dict[str, str] = {
    "reconcile_missing_trades": GAUGE,  # still missing after the fix pass
    "reconcile_last_success_timestamp": GAUGE,
}

# Not ours, but present on every target we alert on.
EXTERNAL: dict[str, str] = {
    "up": GAUGE,  # Prometheus itself, per scrape target
    "process_start_time_seconds": GAUGE,  # prometheus-client process collector
    "process_resident_memory_bytes": GAUGE,
    "node_filesystem_avail_bytes": GAUGE,  # node exporter
    "node_filesystem_size_bytes": GAUGE,
}

EXPORTED: dict[str, str] = {**GATHERER, **DATABASE, **DEDUPLICATOR, **ARCHIVE, **RECONCILE, **EXTERNAL}


def series_names() -> frozenset[str]:
    """Every sample name a PromQL selector may use, histogram suffixes expanded."""
    names: set[str] = set()
    for family, kind in EXPORTED.items():
        if kind == HISTOGRAM:
            names.update(f"{family}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family)
    return frozenset(names)

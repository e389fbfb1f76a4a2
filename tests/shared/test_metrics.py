"""Labelled metrics are on /metrics from the first scrape (shared/metrics.py, init_labels).

A series that appears only at its first increment is invisible to the runbook's greps and makes
``rate()`` alerts miss that first error. So the services create every label combination they
know at start; the source scan below keeps "what they know" equal to what the code can emit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from deduplicator.app import App as DeduplicatorApp
from deduplicator.config import DeduplicatorConfig
from gatherer.app import GathererApp
from gatherer.config import GathererConfig
from gatherer.writer import SPECS
from kalshi_sim import keygen
from shared import metrics as M
from shared.config import Environment, parse_config
from shared.kalshi.decode import _LIFECYCLE_KEY

REPO = Path(__file__).resolve().parents[2]
# Families that carry a measurement per label, set when measured (a 0 would be a false reading),
# or whose labels only exist at run time (a socket's id, a table's partitions).
MEASURED = {"ws_client_connected", "ws_client_last_ping_timestamp", "ws_client_last_message_timestamp",
            "writer_queue_rows", "writer_queue_max_rows", "writer_spool_rows", "writer_spool_bytes", "db_default_partition_rows", "db_partitions_ahead_days",
            "db_pool_connections_in_use", "db_pool_connections_max", "db_pool_requests_waiting",
            "db_pool_errors_total", "gatherer_info", "dedup_sync_lag_seconds", "dedup_gatherer_health",
            "rest_budget_tokens_per_second", "rest_budget_capacity_tokens"}


def _labelled_families_without_samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    seen = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    empty = []
    for collector in list(registry._collector_to_names):  # the registry's own metric objects
        names = getattr(collector, "_labelnames", ())
        name = getattr(collector, "_name", None)
        if not names or name is None or name in MEASURED or f"{name}_total" in MEASURED:
            continue
        if not any(s == name or s.startswith(name + "_") for s in seen):
            empty.append(name)
    return sorted(empty)


def test_gatherer_first_scrape_lists_every_known_series(tmp_path: Path) -> None:
    key_id, pem, _ = keygen()
    (tmp_path / "k.pem").write_text(pem)
    cfg = parse_config(f"gatherer_id: gatherer-1\nkalshi:\n  env: demo\n  api_key_id: {key_id}\n"
                       f"  private_key_file: {tmp_path / 'k.pem'}\n", GathererConfig, Environment({}))
    registry = CollectorRegistry()
    GathererApp(cfg, registry)  # constructed, not started: what the very first scrape would see
    assert _labelled_families_without_samples(registry) == []
    text = generate_latest(registry).decode()
    for writer in SPECS:
        for t in M.DB_ERROR_TYPES:
            assert f'writer_errors_total{{type="{t}",writer="{writer}"}} 0.0' in text
    assert 'conn_manager_subscribe_errors_total{channel="orderbook_delta",error_code="25"} 0.0' in text
    assert 'backfill_requests_total{reason="seq_gap"} 0.0' in text
    assert 'market_registry_rest_errors_total{endpoint="/markets"} 0.0' in text


def test_deduplicator_first_scrape_lists_every_known_series() -> None:
    cfg = parse_config("gatherers:\n  - id: gatherer-1\n    database: {host: 127.0.0.1}\n"
                       "  - id: gatherer-2\n    database: {host: 127.0.0.1}\n"
                       "production: {host: 127.0.0.1}\n", DeduplicatorConfig, Environment({}))
    registry = CollectorRegistry()
    DeduplicatorApp(cfg, registry)
    assert _labelled_families_without_samples(registry) == []
    text = generate_latest(registry).decode()
    assert 'dedup_errors_total{gatherer="production",type="connection"} 0.0' in text
    assert 'dedup_rows_read_total{gatherer="gatherer-2",table="trades"} 0.0' in text


def _source(*names: str) -> str:
    return "\n".join((REPO / n).read_text() for n in names)


def _literal_args(calls: tuple[str, ...], src: str) -> list[str]:
    """The first string literal among the arguments of each call of ``calls`` (arguments may
    hold calls nested two deep, e.g. ``tuple(sorted(x))``); calls without one yield nothing."""
    args = r'(?:[^"()]|\((?:[^()]|\([^()]*\))*\))*'
    return [v for c in calls for v in re.findall(rf'\b{c}\({args}"(\w+)"', src)]


@pytest.mark.parametrize(("what", "found", "known"), [
    ("ws error types", lambda: set(re.findall(r'ws_client_errors_total\.labels\(type="(\w+)"\)',
                                              _source("gatherer/connection.py")))
     | set(re.findall(r'^\s+return "(\w+)"$', _source("gatherer/connection.py").split("def _error_kind")[1],
                      re.MULTILINE)), M.WS_ERROR_TYPES),
    ("REST endpoints", lambda: set(re.findall(r'"(/[a-z][a-z_/{}]*)"', _source(
        "gatherer/rest.py", "gatherer/markets.py", "gatherer/poller.py", "gatherer/backfill.py",
        "gatherer/app.py"))), M.REST_ENDPOINTS),
    ("backfill reasons", lambda: set(re.findall(r'BackfillRequest\([^)]*"(\w+)"', _source(
        "gatherer/connection.py", "gatherer/router.py")))
     | set(re.findall(r'backfill\.run\([^)]*?"(\w+)"', _source("gatherer/app.py")))
     | set(re.findall(r'self\.run\([^)]*?"(\w+)"', _source("gatherer/backfill.py"))), M.BACKFILL_REASONS),
    ("dedup error types", lambda: set(re.findall(r'type="(\w+)"', _source("deduplicator/sync.py",
                                                                            "deduplicator/app.py")))
     | set(re.findall(r'"(\w+)" if ident else "(\w+)"', _source("deduplicator/sync.py"))[0]),
     M.DEDUP_ERROR_TYPES),
    ("db error types", lambda: set(re.findall(r'return "(\w+)"', _source("shared/db.py").split(
        "def error_type")[1].split("\ndef ")[0])), M.DB_ERROR_TYPES),
    ("resync reasons", lambda: set(_literal_args(("ResyncRequest", "_request", "request_resync"), _source(
        "gatherer/router.py", "gatherer/app.py", "gatherer/poller.py"))), M.RESYNC_REASONS),
    ("resync steps", lambda: set(re.findall(r'resync_steps_total\.labels\(step="(\w+)"\)',
                                            _source("gatherer/resync.py"))), M.RESYNC_STEPS),
    # what ended a resync: a literal how=, or the step that brought the snapshot (p.step)
    ("resync endings", lambda: {v for t in re.findall(r'how="(\w+)"|how = "(\w+)"|p\.step(?:, p\.step_at)? = "(\w+)"',
                                                      _source("gatherer/resync.py")) for v in t if v},
     M.RESYNC_ENDINGS),
    ("lifecycle kinds", lambda: {k for k in _LIFECYCLE_KEY if k != "market_lifecycle_v2"}, M.LIFECYCLE_TYPES),
], ids=lambda v: v if isinstance(v, str) else "")
def test_code_emits_no_label_value_it_does_not_initialise(what: str, found: object, known: tuple[str, ...]) -> None:
    values = found()  # type: ignore[operator]
    assert values, f"{what}: the scan found nothing (did the code move?)"
    assert values <= set(known), f"{what}: add {sorted(values - set(known))} to shared/metrics.py"

"""docs/runbook.md is true for this codebase: its SQL runs against the migrated schemas, its
commands, units, metrics, endpoints and log lines are the ones the code and this kit provide."""

from __future__ import annotations

import re

import psycopg

from ._rules import RUNBOOK, SPEC_LOG_LINES, alert_rules
from ._tools import REPO
from .exported_metrics import EXPORTED, HISTOGRAM

SQL_TAGS = {"gatherer", "production", "both", "timescaledb"}
METRIC_PREFIXES = (
    "gatherer_",
    "market_registry_",
    "ws_client_",
    "conn_manager_",
    "router_",
    "writer_",
    "poller_",
    "backfill_",
    "retention_",
    "db_pool_",
    "db_default_",
    "db_partitions_",
    "dedup_",
    "export_",
)
def _subcommands() -> set[str]:
    """What `kalshi-data` really offers (its parser), so the runbook names no missing command."""
    import argparse

    from kalshi_data.__main__ import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices)


KALSHI_DATA_SUBCOMMANDS = _subcommands()


def text() -> str:
    return RUNBOOK.read_text()


def sql_blocks() -> list[tuple[str, str]]:
    """(tag, sql) of every ```sql block; the first line is `-- db: <tag>`."""
    out = []
    for body in re.findall(r"```sql\n(.*?)```", text(), re.DOTALL):
        first, _, rest = body.partition("\n")
        m = re.fullmatch(r"-- db: (\w+)", first.strip())
        assert m, f"sql block without '-- db: <target>' first line: {body[:80]!r}"
        out.append((m.group(1), rest.strip()))
    return out


def test_sql_blocks_are_tagged() -> None:
    blocks = sql_blocks()
    assert len(blocks) >= 25
    assert {t for t, _ in blocks} <= SQL_TAGS
    for tag, sql in blocks:
        if tag != "timescaledb":
            assert sql.rstrip().endswith(";") and sql.count(";") == 1, (
                f"one statement per block: {sql[:60]}"
            )


def _run_blocks(dsn: str, target: str) -> list[str]:
    failures = []
    executed = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        for tag, sql in sql_blocks():
            if tag not in (target, "both"):
                continue
            executed += 1
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(sql).fetchall()
            except psycopg.Error as exc:
                failures.append(f"{sql[:120]!r}: {exc}")
    assert executed >= 15, f"only {executed} runbook queries apply to {target}"
    return failures


def test_runbook_sql_runs_on_a_gatherer_database(gatherer_dsn: str) -> None:
    failures = _run_blocks(gatherer_dsn, "gatherer")
    assert not failures, "\n".join(failures)


def test_runbook_sql_runs_on_production(production_dsn: str) -> None:
    failures = _run_blocks(production_dsn, "production")
    assert not failures, "\n".join(failures)


def test_required_runbook_queries_are_present() -> None:
    """operations.md: the queries the runbook must carry."""
    sql = "\n".join(s for _, s in sql_blocks())
    assert "SELECT * FROM sync_cursors" in sql
    assert re.search(r"FROM trades\s+WHERE received_at", sql)
    assert re.search(r"WHERE exchange_ts >=", sql)
    assert (
        re.search(r"FROM orderbook_snapshots\s+WHERE ticker = ", sql)
        and "snapshot_ts" in sql
        and "source" in sql
    )
    assert "LEAD(exchange_ts) OVER (PARTITION BY ticker ORDER BY exchange_ts)" in sql
    assert re.search(r"exchange_ts / 60000000", sql), "per-minute trade counts"
    for ts in (
        "timescaledb_information.hypertables",
        "timescaledb_information.chunks",
        "compress_chunk",
        "drop_chunks",
    ):
        assert ts in sql, ts


def test_every_alert_section_has_commands_or_queries() -> None:
    sections = re.split(r"\n### ", text())
    by_title = {s.split("\n", 1)[0].strip(): s for s in sections[1:]}
    for r in alert_rules():
        body = by_title.get(r["alert"])
        assert body, f"no section for {r['alert']}"
        assert "`" in body, f"{r['alert']}: no command, metric or query"


def test_metric_names_in_runbook_exist() -> None:
    names = set()
    for family, kind in EXPORTED.items():
        names.add(family)
        if kind == HISTOGRAM:
            names |= {f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    mentioned = {
        m for m in re.findall(r"\b([a-z][a-z0-9_]+)\b", text()) if m.startswith(METRIC_PREFIXES)
    }
    # SQL identifiers that share a prefix are not metrics
    mentioned -= {"dedup_reader", "gatherer_id", "gatherer_meta", "gatherer_ips", "backfill_queue"}
    # terraform variable names share prefixes too
    mentioned -= set(
        re.findall(r'variable "(\w+)"', (REPO / "terraform" / "variables.tf").read_text())
    )
    unknown = sorted(mentioned - names)
    assert not unknown, f"runbook names metrics the code does not export: {unknown}"


def test_units_and_commands_exist() -> None:
    body = text()
    units = set(re.findall(r"\b(kalshi-[a-z-]+\.(?:service|timer))\b", body))
    present = {p.name for p in (REPO / "systemd").iterdir()}
    assert units and units <= present, units - present
    code = "\n".join(
        re.findall(r"```sh\n(.*?)```", body, re.DOTALL) + re.findall(r"`([^`\n]+)`", body)
    )
    subs = re.findall(r"kalshi-data ([\w-]+)", code)
    assert {"healthcheck", "verify", "gaps", "export", "migrate"} <= set(subs)
    assert set(subs) <= KALSHI_DATA_SUBCOMMANDS, set(subs) - KALSHI_DATA_SUBCOMMANDS
    for cmd in re.findall(r"bin/(kalshi-[a-z]+)", code):
        assert cmd in ("kalshi-data", "kalshi-gatherer", "kalshi-deduplicator"), cmd
    assert re.search(r"systemctl \w+ gatherer\b", body) and re.search(
        r"systemctl \w+ deduplicator\b", body
    )


def test_endpoints_and_ports() -> None:
    body = text()
    for url in re.findall(r"localhost:(\d+)(/\w+)?", body):
        assert url in {
            ("8080", "/health"),
            ("8080", "/ready"),
            ("9090", "/metrics"),
            ("8080", ""),
        }, url
    assert ".components.websocket.connections" in body and ".components.websocket.healthy" in body
    assert ".gatherers" in body and ".components.sync.max_lag_seconds" in body


def test_log_lines_are_the_spec_ones() -> None:
    body = text()
    for line in SPEC_LOG_LINES:
        pattern = line.replace("N", "[0-9]+") if " N " in line or line.endswith("-N") else line
        assert pattern in body, f"runbook does not grep for {line!r}"


def test_runbook_has_no_secrets() -> None:
    body = text()
    assert not re.search(r"-----BEGIN [A-Z ]*PRIVATE KEY-----", body)
    assert not re.search(r"postgres(ql)?://[^\s:@/]+:[^\s@/]+@", body), "DSN with a password"


def test_every_shell_block_says_where_it_runs_and_can_run_or_says_why_not() -> None:
    """The rehearsal (test_rehearsal.py) runs every shell command of the runbook on the host
    its block names, except the ones that need what one machine lacks, each with its reason."""
    from . import _runbook

    blocks = _runbook.shell_blocks()  # asserts the '# host: ...' first line of each
    assert {b.host for b in blocks} == {"gatherer", "deduplicator", "admin"}
    commands = [c for b in blocks for c in b.commands]
    excluded = [c for c in commands if _runbook.exclusion(c)]
    assert len(commands) - len(excluded) >= 18, (len(commands), excluded)
    # every exclusion rule still matches something (a stale rule would hide nothing on purpose)
    for pattern, reason in _runbook.EXCLUDED:
        assert any(re.search(pattern, c) for c in commands), f"unused exclusion {pattern!r} ({reason})"
    assert {b.target for b in _runbook.sql_blocks()} - {"gatherer", "production", "both"} == set(
        _runbook.EXCLUDED_SQL_TAGS)

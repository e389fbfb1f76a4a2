"""The rehearsal (`make rehearse`): the built wheel, terraform's rendered files and the runbook
boot a healthy fleet on one machine. How, and the short list of substitutions: _rehearsal.py.

One fleet serves every check here: the wheel's contents and console scripts, the deployment
(every process healthy by ``kalshi-data healthcheck``, rows merged into production, yesterday
exported to the bucket by the export unit, no process ever stopped by a config or secret error),
and every shell and SQL block of docs/runbook.md that can run on one machine (_runbook.py).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shared.logging import JsonFormatter

from . import _runbook
from ._host_files import Rendered
from ._rehearsal import (
    EXPORT_TABLES,
    GATHERERS,
    HOSTS,
    Rehearsal,
    build_wheel,
    day_end_us,
    make_venv,
    timed,
    wait_out_midnight,
    yesterday_utc,
)
from ._tools import REPO

# The fleet fixture (build, install, two days of fleet, export) is part of the first test; near
# midnight UTC it first waits up to 22 minutes (_rehearsal.wait_out_midnight).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2700)]

CONSOLE_SCRIPTS = ("kalshi-data", "kalshi-sim", "kalshi-gatherer", "kalshi-deduplicator")
KALSHI_DATA_COMMANDS = ("migrate", "config-check", "healthcheck", "export", "import", "demo", "verify", "gaps")


@pytest.fixture(scope="module")
def install(tmp_path_factory: pytest.TempPathFactory) -> Iterator[concurrent.futures.Future[tuple[Path, Path]]]:
    """(wheel, fresh virtualenv with only the wheel), built in the background from the start."""
    work = tmp_path_factory.mktemp("install")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        t0 = time.monotonic()

        def job() -> tuple[Path, Path]:
            wheel = build_wheel(work)
            venv = make_venv(work, wheel)
            print(f"rehearsal: wheel built and installed in {time.monotonic() - t0:.0f} s")
            return wheel, venv

        yield pool.submit(job)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, host_files: Rendered, moto_endpoint: str,
          install: concurrent.futures.Future[tuple[Path, Path]]) -> Iterator[Rehearsal]:
    t0 = time.monotonic()
    work = tmp_path_factory.mktemp("rehearsal")
    os.chmod(work, 0o755)
    r = Rehearsal(work, host_files, moto_endpoint, progress=print)
    upload = next(b for b in _runbook.shell_blocks() if any("put-secret-value" in c for c in b.commands))
    try:
        with timed(r.timings, "databases"):
            r.start_databases()
        with timed(r.timings, "cloud"):
            r.create_cloud()
            r.write_host_files()
            r.bootstrap_databases()
        with timed(r.timings, "install (waited)"):
            _wheel, r.venv = install.result()
        with timed(r.timings, "keys"):
            r.upload_kalshi_keys("\n".join(upload.commands))
        with timed(r.timings, "migrate"):
            r.migrate()
        wait_out_midnight(print)
        day = r.day = yesterday_utc()
        with timed(r.timings, "yesterday"):
            r.start_fleet("yesterday", deduplicator=False)
            r.health_yesterday = r.wait_healthy(GATHERERS)
            r.rows_yesterday = r.wait_day_rows(day)
            r.stop_notes = r.stop_gatherers_and_simulator()
        with timed(r.timings, "today"):
            r.today_us = time.time_ns() // 1000
            r.start_fleet("today", deduplicator=True)
            r.health = r.wait_healthy()
        with timed(r.timings, "merged"):
            r.merged = r.wait_merged(past_us=day_end_us(day) + 600_000_000)
        with timed(r.timings, "export"):
            r.export = r.run_oneshot(r.hosts["deduplicator"], "kalshi-export.service")
        r.timings["total"] = round(time.monotonic() - t0, 1)
        print(f"rehearsal: fleet up and exported in {r.timings['total']:.0f} s: {r.timings}")
        yield r
    finally:
        notes = r.stop()
        print(f"rehearsal: stopped ({'; '.join(notes) or 'cleanly'})")


# --- the deployment -------------------------------------------------------------------------------
def test_migrators_applied_the_wheels_migrations(fleet: Rehearsal) -> None:
    for name in HOSTS:
        target = "production" if name == "deduplicator" else "gatherer"
        files = sorted(p.name for p in (REPO / "migrations" / target).glob("*.sql"))
        journal = fleet.hosts[name].log("kalshi-migrator").read_text()
        assert f"applied {len(files)} migration(s) to {target}: {', '.join(files)}" in journal, journal
        assert "roles applied" in journal


def test_every_process_is_healthy(fleet: Rehearsal) -> None:
    assert set(fleet.health_yesterday) == set(GATHERERS)
    for name in HOSTS:
        res = fleet.healthcheck(fleet.hosts[name])
        assert res.returncode == 0, f"{name}: {res.stdout}{res.stderr}"
        assert res.stdout.strip() == f"{name}: healthy", res.stdout


def test_rows_from_every_gatherer_are_merged_into_production(fleet: Rehearsal) -> None:
    assert all(n > 0 for n in fleet.merged.values()) and set(fleet.merged) == set(GATHERERS)
    lo = day_end_us(fleet.day) - 86_400_000_000
    with psycopg.connect(fleet.production()) as conn:
        for table, col in (("trades", "exchange_ts"), ("orderbook_deltas", "exchange_ts"),
                           ("orderbook_snapshots", "snapshot_ts"), ("tickers", "exchange_ts")):
            days = dict(conn.execute(
                f"SELECT {col} >= %s + 86400000000, count(*) FROM {table} WHERE {col} >= %s GROUP BY 1",
                (lo, lo)).fetchall())
            assert days.get(False, 0) > 0 and days.get(True, 0) > 0, f"{table}: yesterday/today {days}"
        merged_by = {g for (g,) in conn.execute("SELECT DISTINCT gatherer_id FROM trades").fetchall()}
    assert merged_by <= set(GATHERERS) and merged_by


def test_yesterday_is_in_the_bucket_with_its_manifest(fleet: Rehearsal) -> None:
    s3 = fleet._client("s3")
    lo = day_end_us(fleet.day) - 86_400_000_000
    for table in EXPORT_TABLES:
        key = f"table={table}/date={fleet.day}/_manifest.json"
        manifest = json.loads(s3.get_object(Bucket=fleet.bucket, Key=key)["Body"].read())
        assert manifest["table"] == table and manifest["day"] == fleet.day
        parts = s3.list_objects_v2(Bucket=fleet.bucket, Prefix=f"table={table}/date={fleet.day}/part-")
        assert len(parts.get("Contents", [])) == len(manifest["parts"])
        if table == "coverage_events":
            continue
        col = "snapshot_ts" if table == "orderbook_snapshots" else "exchange_ts"
        with psycopg.connect(fleet.production()) as conn:
            n = conn.execute(f"SELECT count(*) FROM {table} WHERE {col} >= %s AND {col} < %s",
                             (lo, lo + 86_400_000_000)).fetchone()[0]  # type: ignore[index]
        assert manifest["row_count"] == n > 0, (table, manifest["row_count"], n)
    prom = fleet.hosts["deduplicator"].local("/var/lib/prometheus/node-exporter/kalshi_export.prom").read_text()
    assert re.search(r'^export_rows_total\{table="trades"\} [1-9]', prom, re.MULTILINE), prom


def test_no_process_ever_stopped_on_a_config_or_secret_error(fleet: Rehearsal) -> None:
    assert fleet.exits, "no process exit was recorded"
    bad = [(n, rc, tail) for n, rc, tail in fleet.exits if rc not in (0, -15, 143)]
    assert not bad, bad
    for host in fleet.hosts.values():
        for journal in host.journal.glob("*.log"):
            text = journal.read_text()
            assert not re.search(r"config error|secret \S+:|Traceback", text), f"{journal}:\n{text[-2000:]}"
    assert not fleet.stop_notes, fleet.stop_notes


# --- the wheel (installed in the background while the fleet fixture starts) -------------------
def test_wheel_holds_what_a_host_needs_and_nothing_else(install: concurrent.futures.Future[tuple[Path, Path]]) -> None:
    wheel, _venv = install.result()
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
        assert tops == {"shared", "gatherer", "deduplicator", "kalshi_data", "kalshi_sim", "migrations"}, tops
        for sql_file in sorted((REPO / "migrations").rglob("*.sql")):
            rel = sql_file.relative_to(REPO).as_posix()
            assert rel in names, f"{rel} is not in the wheel"
            assert z.read(rel) == sql_file.read_bytes(), rel
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = set(re.findall(r"^([\w-]+) = ", z.read(entry).decode(), re.MULTILINE))
    assert scripts == set(CONSOLE_SCRIPTS)


def test_console_scripts_work_from_an_empty_directory(install: concurrent.futures.Future[tuple[Path, Path]],
                                                      tmp_path: Path) -> None:
    _wheel, venv = install.result()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    runs = [[s, "--help"] for s in CONSOLE_SCRIPTS] + [["kalshi-data", c, "--help"] for c in KALSHI_DATA_COMMANDS]
    for argv in runs:
        res = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0 and "usage:" in res.stdout, f"{argv}: {res.stdout}{res.stderr}"
    assert list(tmp_path.iterdir()) == [], "a command wrote into the working directory"


def test_an_installation_without_migrations_says_so(install: concurrent.futures.Future[tuple[Path, Path]],
                                                    tmp_path: Path) -> None:
    """A wheel whose package data went missing: the migrations package without its .sql files."""
    _wheel, venv = install.result()
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "__init__.py").write_text("")
    res = subprocess.run([str(venv / "bin" / "kalshi-data"), "migrate", "--target", "gatherer", "--dsn",
                          "host=127.0.0.1 port=1 dbname=x"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}, timeout=120, check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == ("kalshi-data migrate: migration migrations: not installed with this kalshi-data "
                                  "(no migrations package data next to shared/); reinstall from a complete wheel")


# --- docs/runbook.md against the fleet ---------------------------------------------------------
def _sim_ticker(fleet: Rehearsal) -> str:
    """The runbook's example ticker here: the market gatherer-2 (where gatherer blocks run) has
    subscribed since today's start with the most trades."""
    with psycopg.connect(fleet.clusters["gatherer-2"].dsn("kalshi_ts")) as conn:
        row = conn.execute(
            "SELECT ticker FROM trades WHERE received_at > %(t)s AND ticker IN (SELECT ticker FROM "
            "orderbook_snapshots WHERE source = 'ws' AND received_at > %(t)s) "
            "GROUP BY ticker ORDER BY count(*) DESC LIMIT 1", {"t": fleet.today_us}).fetchone()
    assert row, "gatherer-2 subscribed to no market with trades today"
    return str(row[0])


def _host_for(fleet: Rehearsal, tag: str) -> Any:
    # gatherer blocks run on gatherer-2, the host the runbook's examples name
    return None if tag == "admin" else fleet.hosts["gatherer-2" if tag == "gatherer" else "deduplicator"]


def _translate(fleet: Rehearsal, tag: str, command: str, ticker: str) -> str:
    host = _host_for(fleet, tag)
    if host is None:
        return command.replace(_runbook.EXAMPLE_TICKER, ticker)
    journals = {u: str(host.log(u)) for u in ("kalshi-gatherer", "kalshi-deduplicator", "kalshi-export",
                                              "kalshi-migrator")}
    command = command.replace("sudo -u kalshi ", "env PGUSER=kalshi ")  # substitution 4
    command = _runbook.translate(command, journals=journals, ports=host.ports, ticker=ticker)
    return host.map_paths(command, fleet.venv)


def _runner(fleet: Rehearsal, tag: str) -> Any:
    host = _host_for(fleet, tag)
    cwd = fleet.workdir / "operator" if host is None else host.local("/var/lib/kalshi")
    pg_bin = str(Path(fleet.clusters["deduplicator"].binaries.tool("psql")).parent)

    def run(script: str) -> str:
        script = re.sub(r"(?m)(^|\$\(|\|\s*)aws ", rf"\1aws --endpoint-url {fleet.aws_endpoint} ", script)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AWS_"))}
        env.update(fleet.aws_env())
        env["PATH"] = f"{pg_bin}:{env['PATH']}"
        if host is not None and host.socket_dir is not None:
            # substitution 2: the host's local PostgreSQL listens on its cluster's port, not 5432
            env["PGPORT"] = str(fleet.clusters[host.name].port)
        proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
        return proc.stdout

    return run


def _check(ran: _runbook.Ran) -> str | None:
    """Why a command's result is wrong for a healthy fleet (None when right)."""
    if ran.rc != 0:
        if ran.rc == 1 and any(p in ran.command for p in _runbook.MAY_FIND_NOTHING) and not ran.output.strip():
            return None
        return f"exit {ran.rc}"
    if "| jq" in ran.command and re.search(r"(^|\s)null(\s|$)", ran.output):
        return "a jq path the service does not serve (null)"
    if ("grep" in ran.command or "| jq" in ran.command or "curl" in ran.command) and not ran.output.strip() \
            and "-w '%{http_code}" not in ran.command:
        return "no output"
    if "-w '%{http_code}" in ran.command and ran.output.strip() != "200":
        return f"HTTP {ran.output.strip()}"
    if "ERROR" in ran.output and "psql" in ran.command:
        return "psql reported an error"
    return None


def test_runbook_shell_blocks_run_on_the_fleet(fleet: Rehearsal) -> None:
    ticker = _sim_ticker(fleet)
    ran_total, excluded, failures = 0, [], []
    for block in _runbook.shell_blocks():
        todo = []
        for cmd in block.commands:
            reason = _runbook.exclusion(cmd)
            if reason:
                excluded.append(f"[{block.section}] {cmd[:70]}: {reason}")
                continue
            todo.append((cmd, _translate(fleet, block.host, cmd, ticker)))
        if not todo:
            continue
        for ran in _runbook.run_script(todo, _runner(fleet, block.host)):
            ran_total += 1
            why = _check(ran)
            if why:
                failures.append(f"[{block.section}] {ran.command}\n  ran: {ran.ran}\n  {why}: {ran.output[-800:]}")
    print(f"runbook: {ran_total} shell commands ran on the fleet; excluded:\n  " + "\n  ".join(excluded))
    assert not failures, "\n".join(failures)
    assert ran_total >= 18, ran_total


def test_runbook_inline_checks_run_on_the_fleet(fleet: Rehearsal) -> None:
    ticker = _sim_ticker(fleet)
    failures, n = [], 0
    by_host: dict[str, list[tuple[str, str]]] = {}
    for section, cmd in _runbook.inline_runnable():
        tag = _runbook.inline_host(cmd)
        by_host.setdefault(tag, []).append((cmd, _translate(fleet, tag, cmd, ticker)))
    for tag, todo in by_host.items():
        for ran in _runbook.run_script(todo, _runner(fleet, tag)):
            n += 1
            why = _check(ran)
            if why:
                failures.append(f"{ran.command}\n  ran: {ran.ran}\n  {why}: {ran.output[-800:]}")
    assert not failures, "\n".join(failures)
    assert n >= 12, n


def test_runbook_sql_runs_on_the_fleet_through_its_psql_commands(fleet: Rehearsal) -> None:
    """Each SQL block through the runbook's own "Opening psql" command of the host it names."""
    ticker = _sim_ticker(fleet)
    opening = {b.host: next(c for c in b.commands if "psql" in c)
               for b in _runbook.shell_blocks() if b.section == "Opening psql"}
    assert set(opening) == {"gatherer", "deduplicator"}
    failures, excluded, rows = [], [], {}
    n = 0
    for block in _runbook.sql_blocks():
        if block.target in _runbook.EXCLUDED_SQL_TAGS:
            excluded.append(f"[{block.section}] {_runbook.EXCLUDED_SQL_TAGS[block.target]}")
            continue
        tags = ["gatherer", "deduplicator"] if block.target == "both" else [
            "deduplicator" if block.target == "production" else "gatherer"]
        for tag in tags:
            psql = _translate(fleet, tag, opening[tag], ticker)
            sql_text = block.sql.replace(_runbook.EXAMPLE_TICKER, ticker)
            out = _runner(fleet, tag)(f"set -o pipefail\n{psql} <<'SQL'\n{sql_text}\nSQL\necho \"@@rc $?\"\n")
            n += 1
            m = re.search(r"@@rc (\d+)", out)
            if not m or m.group(1) != "0" or "ERROR" in out:
                failures.append(f"[{block.section}] on {tag}: {block.sql[:100]!r}\n{out[-800:]}")
            count = re.search(r"\((\d+) rows?\)", out)
            rows[(block.section, tag, block.sql[:40])] = int(count.group(1)) if count else -1
    print(f"runbook: {n} SQL runs on the fleet; excluded: {excluded}")
    assert not failures, "\n".join(failures)
    assert n >= 40 and len(excluded) == 1
    # a healthy fleet answers these with rows
    for (section, tag, head), count in rows.items():
        if "FROM sync_cursors" in head or head.startswith("SELECT to_timestamp((exchange_ts / 600"):
            assert count > 0, (section, tag, head)


def test_runbook_error_grep_finds_the_levels_we_log(fleet: Rehearsal) -> None:
    """Quick checks' `grep -E '"level": ?"(CRITICAL|ERROR|WARN)'` over real log lines of ours."""
    pattern = re.search(r"""grep -E '("level"[^']+)'""", _runbook.RUNBOOK.read_text())
    assert pattern
    fmt = JsonFormatter({"gatherer_id": "gatherer-2"})
    lines = [fmt.format(_record(level)) for level in (10, 20, 30, 40, 50)]
    res = subprocess.run(["grep", "-E", pattern.group(1)], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, check=False)
    assert [json.loads(ln)["level"] for ln in res.stdout.splitlines()] == ["WARNING", "ERROR", "CRITICAL"]


def _record(level: int) -> Any:
    import logging

    return logging.LogRecord("gatherer.test", level, __file__, 1, "message", None, None)

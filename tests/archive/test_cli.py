"""``kalshi-data export`` / ``import`` as an operator runs them: flags, exit codes, one-line
errors, the metrics textfile; against real PostgreSQL and moto's S3 server."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kalshi_data.__main__ import main
from kalshi_data.archive import MANIFEST_NAME, TABLES, S3Store
from kalshi_data.archive.days import day_range_us
from kalshi_data.archive.export import check_columns, day_prefix
from kalshi_data.export_cmd import TABLE_NAMES
from tests.archive._data import DAY, day_rows, fill


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The commands configure the root logger as a process would; undo it after each test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def _samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(path.read_text()) for s in fam.samples}


def test_table_names_match_schema() -> None:
    assert TABLE_NAMES == tuple(TABLES)


def test_archive_schema_matches_production_migrations(production_dsn: str) -> None:
    with psycopg.connect(production_dsn) as conn:
        for spec in TABLES.values():
            check_columns(conn, spec, "production")  # raises SchemaMismatch on any drift


def test_export_import_commands_and_metrics(production_dsn: str, store: S3Store, s3_endpoint: str,
                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(production_dsn)
    before = day_rows(production_dsn, TABLES["trades"])
    prom = tmp_path / "textfile" / "kalshi_export.prom"
    common = ["--dsn", production_dsn, "--bucket", store.bucket, "--endpoint-url", s3_endpoint,
              "--day", DAY.isoformat()]
    export = ["export", *common, "--table", "trades", "--table", "tickers", "--no-wait-for-sync",
              "--max-rows-per-part", "50", "--metrics-file", str(prom)]
    rc, out, err = _run(capsys, *export)
    assert rc == 0, err
    assert out.splitlines()[0].startswith("exported trades 2026-11-20: 120 rows in 3 part(s)")
    s = _samples(prom)
    assert s[("export_rows_total", (("table", "trades"),))] == 120
    assert s[("export_errors_total", (("table", "trades"), ("type", "s3")))] == 0
    assert s[("export_duration_seconds_count", (("table", "tickers"),))] == 1
    # 2026-11-21 closed at 2026-11-22T00:00Z without an archive: the lag counts from there
    expected_lag = time.time() - day_range_us(DAY)[1] / 1e6 - 86400
    assert abs(s[("export_lag_seconds", (("table", "trades"),))] - expected_lag) < 60

    rc, out, _ = _run(capsys, *export)  # rerun: no-op, counters keep accumulating across runs
    assert rc == 0 and out.startswith("unchanged trades 2026-11-20: already archived (120 rows")
    verify = ["export", *common, "--table", "trades", "--table", "tickers", "--verify"]
    rc, out, err = _run(capsys, *verify)
    assert rc == 0, err
    assert out.splitlines() == ["ok trades 2026-11-20: 120 rows in production and in the archive",
                                "ok tickers 2026-11-20: 120 rows in production and in the archive"]
    with psycopg.connect(production_dsn, autocommit=True) as conn:  # a trade backfilled late
        conn.execute("INSERT INTO trades SELECT '00000000-0000-4000-8000-00000000beef', ticker, exchange_ts + 1, "
                     "yes_price, no_price, count, taker_side, taker_outcome_side, taker_book_side, "
                     "is_block_trade, 'rest', received_at, gatherer_id, merged_at FROM trades "
                     "WHERE exchange_ts = %s LIMIT 1", (day_range_us(DAY)[0],))
    rc, out, _ = _run(capsys, *verify)
    assert rc == 1 and out.splitlines()[0] == ("differs trades 2026-11-20: production 121 rows, archive 120 "
                                               "(the next export run exports it again)")
    rc, out, _ = _run(capsys, *export)
    assert rc == 0 and out.startswith("re-exported trades 2026-11-20: production differed from the archive; "
                                      "now 121 rows")
    rc, _, _ = _run(capsys, *verify)
    assert rc == 0
    with psycopg.connect(production_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM trades WHERE trade_id = '00000000-0000-4000-8000-00000000beef'")
    rc, out, _ = _run(capsys, *export)
    assert rc == 0 and out.startswith("re-exported trades 2026-11-20")
    rc, out, _ = _run(capsys, *export, "--force")
    assert rc == 0 and out.startswith("exported trades")
    s = _samples(prom)
    assert s[("export_rows_total", (("table", "trades"),))] == 120 + 121 + 120 + 120
    assert s[("export_duration_seconds_count", (("table", "trades"),))] == 5
    assert not list(prom.parent.glob("*.tmp"))

    with psycopg.connect(production_dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM trades; DELETE FROM trade_ids")
    rc, out, err = _run(capsys, "import", *common, "--table", "trades")
    assert rc == 0, err
    assert out.startswith("imported trades 2026-11-20: 120 rows checked against the manifest (120 new")
    assert day_rows(production_dsn, TABLES["trades"]) == before


def test_bad_input_gives_one_line_and_nonzero_exit(production_dsn: str, store: S3Store, s3_endpoint: str,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--dsn", production_dsn, "--endpoint-url", s3_endpoint]
    day = ["--day", DAY.isoformat()]

    rc, _, err = _run(capsys, "export", *base, "--table", "trades", *day)
    assert (rc, err) == (2, "kalshi-data export: missing bucket: give --bucket or archive.bucket in --config\n")

    rc, _, err = _run(capsys, "export", *base, "--bucket", "no-such-bucket", "--table", "trades", *day)
    assert rc == 1 and err == "kalshi-data export: s3://no-such-bucket/: bucket does not exist\n"

    rc, _, err = _run(capsys, "export", *base, "--bucket", store.bucket, "--table", "nope", *day)
    assert rc == 2 and "unknown table 'nope'" in err and err.count("\n") == 1

    prom = tmp_path / "m.prom"
    ok = [*base, "--bucket", store.bucket, "--no-wait-for-sync", "--metrics-file", str(prom)]
    rc, _, err = _run(capsys, "export", *ok, "--table", "trades", *day)  # the day has no rows
    assert rc == 1 and err == ("kalshi-data export: trades 2026-11-20: no trades rows in production "
                               "for 2026-11-20; nothing exported (use --allow-empty to record an empty day)\n")
    assert store.list_keys("trades/") is not None and not list(store.list_keys("trades/"))
    assert _samples(prom)[("export_errors_total", (("table", "trades"), ("type", "database")))] == 1
    rc, out, _ = _run(capsys, "export", *ok, "--table", "coverage_events", *day, "--allow-empty")
    assert rc == 0 and "0 rows in 0 part(s)" in out

    rc, _, err = _run(capsys, "import", *base, "--bucket", store.bucket, "--table", "trades", *day)
    assert rc == 1 and err == (f"kalshi-data import: trades 2026-11-20: s3://{store.bucket}/table=trades/"
                               "date=2026-11-20/_manifest.json: no manifest: this table-day is not "
                               "archived (or its export never completed)\n")

    # a manifest that lists a part which is gone: the rerun refuses instead of calling it done
    fill(production_dsn)
    rc, _, _ = _run(capsys, "export", *ok, "--table", "trades", *day)
    assert rc == 0
    prefix = day_prefix(store, TABLES["trades"], DAY)
    part = json.loads(store.get_bytes(prefix + MANIFEST_NAME) or b"")["parts"][0]["file"]
    store.delete_keys([prefix + part])
    rc, _, err = _run(capsys, "export", *ok, "--table", "trades", *day)
    assert rc == 1 and f"lists {part}, which does not exist (re-export with --force)" in err
    assert _samples(prom)[("export_errors_total", (("table", "trades"), ("type", "manifest")))] == 1
    rc, _, _ = _run(capsys, "export", *ok, "--table", "trades", *day, "--force")
    assert rc == 0

    rc, _, err = _run(capsys, "export", "--dsn", "host=127.0.0.1 port=1 dbname=x user=x connect_timeout=2",
                      "--bucket", store.bucket, "--endpoint-url", s3_endpoint, "--table", "trades", *day)
    assert rc == 1 and err.startswith("kalshi-data export: database x@127.0.0.1:1/x: ") and err.count("\n") == 1


def test_export_waits_for_the_deduplicator(production_dsn: str, store: S3Store, s3_endpoint: str,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fill(production_dsn)
    end = day_range_us(DAY)[1]
    with psycopg.connect(production_dsn, autocommit=True) as conn:
        for g, through in (("gatherer-1", end + 3_600_000_000), ("gatherer-2", end - 120_000_000)):
            for t in ("trades", "orderbook_deltas"):
                conn.execute("INSERT INTO sync_cursors (gatherer_id, table_name, db_uuid, merged_through, "
                             "updated_at) VALUES (%s, %s, gen_random_uuid(), %s, 0)", (g, t, through))
    config = tmp_path / "export.yaml"  # settings from the --config file this time, not flags
    config.write_text(f"database:\n  dsn: \"{production_dsn}\"\n  sslmode: disable\n"
                      f"archive:\n  bucket: {store.bucket}\n  endpoint_url: {s3_endpoint}\n"
                      "  sync_margin_s: 600\nlogging:\n  level: WARNING\n")
    argv = ["export", "--config", str(config), "--day", DAY.isoformat()]
    rc, _, err = _run(capsys, *argv, "--table", "trades")
    assert rc == 75 and err == ("kalshi-data export: trades 2026-11-20: deduplicator has not merged trades "
                                "past the end of 2026-11-20 yet (gatherer-2: 720 s short); retry later "
                                "or pass --no-wait-for-sync\n")
    assert not list(store.list_keys("trades/"))
    # a sparse table is judged on each gatherer's most advanced cursor: still gatherer-2
    rc, _, err = _run(capsys, *argv, "--table", "coverage_events", "--allow-empty")
    assert rc == 75 and "gatherer-2" in err
    with psycopg.connect(production_dsn, autocommit=True) as conn:
        conn.execute("UPDATE sync_cursors SET merged_through = %s WHERE gatherer_id = 'gatherer-2' "
                     "AND table_name = 'trades'", (end + 601_000_000,))
    rc, out, err = _run(capsys, *argv, "--table", "trades", "--table", "coverage_events")
    assert rc == 0, err
    assert out.startswith("exported trades") and "exported coverage_events" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_no_permission_is_one_line(production_dsn: str, monkeypatch: pytest.MonkeyPatch, aws_env: None,
                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A moto server that enforces IAM: the exporter's identity may read the bucket, not write it."""
    port = _free_port()
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="4")  # bucket, user, key, policy: then enforce
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="locked")
        iam = boto3.client("iam", endpoint_url=endpoint)
        iam.create_user(UserName="exporter")
        key = iam.create_access_key(UserName="exporter")["AccessKey"]
        iam.put_user_policy(UserName="exporter", PolicyName="read-only", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:List*", "s3:Get*", "s3:Head*"], "Resource": "*"}]}))
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
        monkeypatch.delenv("AWS_SESSION_TOKEN")
        fill(production_dsn, n=10)
        prom = tmp_path / "m.prom"
        rc, _, err = _run(capsys, "export", "--dsn", production_dsn, "--bucket", "locked", "--endpoint-url",
                          endpoint, "--table", "trades", "--day", DAY.isoformat(), "--no-wait-for-sync",
                          "--metrics-file", str(prom))
        assert rc == 1 and err.count("\n") == 1, err
        assert err.startswith("kalshi-data export: trades 2026-11-20: s3://locked/table=trades/date=2026-11-20/part-")
        assert err.endswith(": permission denied (upload: AccessDenied)\n")
        assert _samples(prom)[("export_errors_total", (("table", "trades"), ("type", "s3")))] == 1
    finally:
        server.terminate()
        server.wait(timeout=10)

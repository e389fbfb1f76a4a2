"""``kalshi-data query``: DuckDB over the archive where it lies (moto S3 and a local copy), checked
against production's own counts."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pyarrow.parquet as pq
import pytest

from kalshi_data.__main__ import main
from kalshi_data.archive import TABLES, ExportOptions, S3Store, export_day
from kalshi_data.archive.days import day_range_us
from kalshi_data.archive.export import day_prefix
from shared.pgcluster import PgCluster
from tests.archive._data import DAY, fill
from tests.archive.conftest import moto_bucket
from tests.fix_db import fresh_database

DAYS = (DAY, DAY + timedelta(days=1))


@dataclass(frozen=True)
class Archived:
    dsn: str
    store: S3Store


@pytest.fixture(scope="module")
def archived(pg_cluster: PgCluster, s3_endpoint: str) -> Iterator[Archived]:
    """Two days of every table exported once for the whole module (moto S3, fake credentials
    found by the standard chain)."""
    with moto_bucket(s3_endpoint, "query-archive") as store:
        dsn = fresh_database(pg_cluster, "production", prefix="query")
        fill(dsn)
        fill(dsn, day=DAYS[1], n=60, seed=3)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for spec in TABLES.values():
                for d in DAYS:
                    export_day(conn, store, spec, d, ExportOptions(max_rows_per_part=40, row_group_rows=20))
        yield Archived(dsn, store)


def _query(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["query", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def _csv(out: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(out)))[1:]


def _prod(dsn: str, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def test_counts_over_the_s3_archive_match_production(
        archived: Archived, s3_endpoint: str, capsys: pytest.CaptureFixture[str], aws_env: None) -> None:
    store, dsn = archived.store, archived.dsn
    lo, hi = day_range_us(DAYS[0])[0], day_range_us(DAYS[1])[1]
    s3 = ["--archive", f"s3://{store.bucket}", "--endpoint-url", s3_endpoint, "--format", "csv"]
    for table, col in (("trades", "exchange_ts"), ("orderbook_deltas", "exchange_ts"),
                       ("orderbook_snapshots", "snapshot_ts"), ("tickers", "exchange_ts"),
                       ("coverage_events", "window_start")):
        rc, out, err = _query(capsys, *s3, f"SELECT date, count(*) FROM {table} GROUP BY 1 ORDER BY 1")
        assert rc == 0, err
        want = _prod(dsn, f"SELECT to_char(to_timestamp({col} / 1e6) AT TIME ZONE 'UTC', 'YYYY-MM-DD'), "
                               f"count(*) FROM {table} WHERE {col} >= %s AND {col} < %s GROUP BY 1 ORDER BY 1",
                     (lo, hi))
        assert [(d, int(n)) for d, n in _csv(out)] == [(d, int(n)) for d, n in want], table
    # reference tables are dated snapshots: each day holds the whole table
    rc, out, _ = _query(capsys, *s3, "SELECT date, count(*) FROM markets GROUP BY 1 ORDER BY 1")
    (n_markets,) = _prod(dsn, "SELECT count(*) FROM markets")[0]
    assert rc == 0 and _csv(out) == [[d.isoformat(), str(n_markets)] for d in DAYS]
    # typed columns survive: UUIDs compare as UUIDs, JSON reads as text, exact integers
    rc, out, _ = _query(capsys, *s3, "SELECT count(DISTINCT trade_id), sum(count), min(yes_price) FROM trades "
                                     f"WHERE date = '{DAY.isoformat()}'")
    want = _prod(dsn, "SELECT count(DISTINCT trade_id), sum(count), min(yes_price) FROM trades "
                           "WHERE exchange_ts >= %s AND exchange_ts < %s", day_range_us(DAY))
    assert rc == 0 and _csv(out) == [[str(v) for v in want[0]]]
    rc, out, _ = _query(capsys, *s3, "SELECT count(*) FROM orderbook_snapshots WHERE yes_levels LIKE '%5600%'")
    want = _prod(dsn, "SELECT count(*) FROM orderbook_snapshots WHERE yes_levels::text LIKE '%%5600%%' "
                           "AND snapshot_ts >= %s AND snapshot_ts < %s", (lo, hi))
    assert rc == 0 and _csv(out) == [[str(want[0][0])]]


def test_only_manifest_listed_parts_are_read_and_a_local_copy_works(
        archived: Archived, s3_endpoint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        aws_env: None) -> None:
    store, dsn = archived.store, archived.dsn
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    prefix = day_prefix(store, TABLES["trades"], DAY)
    part = next(k for k in store.list_keys(prefix) if k.endswith(".parquet"))
    # a part a crashed export left behind: not in the manifest, must not be counted
    s3.copy_object(Bucket=store.bucket, Key=prefix + "part-crashed-0000.parquet",
                   CopySource={"Bucket": store.bucket, "Key": part})
    root = tmp_path / "archive"
    for key in store.list_keys(""):
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(store.bucket, key, str(root / key))
    (n,) = _prod(dsn, "SELECT count(*) FROM trades WHERE exchange_ts >= %s AND exchange_ts < %s",
                 (day_range_us(DAYS[0])[0], day_range_us(DAYS[1])[1]))[0]
    for where in (["--archive", f"s3://{store.bucket}", "--endpoint-url", s3_endpoint], ["--archive", str(root)]):
        rc, out, err = _query(capsys, *where, "SELECT count(*) AS n FROM trades")
        assert rc == 0, err
        assert out.splitlines()[2].strip() == str(n) and out.splitlines()[-1] == "(1 row)"
    out_file = tmp_path / "q.parquet"
    rc, _, err = _query(capsys, "--archive", str(root), "--format", "parquet", "--output", str(out_file),
                        "SELECT ticker, count(*) AS n FROM trades GROUP BY 1")
    assert rc == 0 and sum(pq.read_table(out_file).column("n").to_pylist()) == n, err


def test_errors_are_one_line(archived: Archived, s3_endpoint: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str], aws_env: None) -> None:
    store = archived.store
    s3 = ["--archive", f"s3://{store.bucket}", "--endpoint-url", s3_endpoint]
    rc, _, err = _query(capsys, *s3, "SELECT nope FROM trades")
    assert rc == 2 and err.count("\n") == 1 and err.startswith("kalshi-data query: ")
    rc, _, err = _query(capsys, "--archive", str(tmp_path), "SELECT 1")
    assert rc == 2 and "no archived table-day" in err and err.count("\n") == 1
    rc, _, err = _query(capsys, "SELECT 1")
    assert rc == 2 and "--archive" in err
    # DuckDB is an optional extra: without it, one line saying how to get it
    code = ("import sys; sys.modules['duckdb'] = None; from kalshi_data.__main__ import main; "
            "sys.exit(main(['query', '--archive', '.', 'SELECT 1']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == ("kalshi-data query: DuckDB is not installed; it is an optional extra: "
                          "pip install 'kalshi-data[query]'\n")

"""The Hive layout (table=<t>/date=<d>/) and the archives written before it: days in the old
layout (<t>/date=<d>/) and of schema version 1 still import, and export does not archive them
twice."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import boto3
import psycopg
import pyarrow.parquet as pq
import pytest

from kalshi_data.archive import (
    MANIFEST_NAME,
    TABLES,
    ExportOptions,
    S3Store,
    export_day,
    import_day,
)
from kalshi_data.archive.export import day_prefix, legacy_day_prefix
from shared.pgcluster import PgCluster
from tests.archive._data import DAY, fill
from tests.fix_db import fresh_database

SMALL = ExportOptions(max_rows_per_part=50, row_group_rows=25)


def _conn(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


def _move(store: S3Store, s3_endpoint: str, src: str, dst: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for key in list(store.list_keys(src)):
        s3.copy_object(Bucket=store.bucket, Key=dst + key[len(src):], CopySource={"Bucket": store.bucket, "Key": key})
        s3.delete_object(Bucket=store.bucket, Key=key)


def test_keys_are_hive_style(production_dsn: str, store: S3Store) -> None:
    fill(production_dsn)
    with _conn(production_dsn) as src:
        export_day(src, store, TABLES["trades"], DAY, SMALL)
    keys = sorted(store.list_keys(""))
    assert keys and all(k.startswith("table=trades/date=2026-11-20/") for k in keys), keys
    assert "table=trades/date=2026-11-20/_manifest.json" in keys


def test_a_day_in_the_old_layout_imports_and_is_not_exported_again(
        production_dsn: str, pg_cluster: PgCluster, store: S3Store, s3_endpoint: str) -> None:
    counts = fill(production_dsn)
    spec = TABLES["tickers"]
    with _conn(production_dsn) as src:
        export_day(src, store, spec, DAY, SMALL)
        _move(store, s3_endpoint, day_prefix(store, spec, DAY), legacy_day_prefix(store, spec, DAY))
        again = export_day(src, store, spec, DAY, SMALL)
    assert (again.status, again.rows) == ("legacy", counts["tickers"])
    assert again.url.endswith("/tickers/date=2026-11-20/")
    assert not list(store.list_keys(day_prefix(store, spec, DAY)))  # nothing written twice
    target = fresh_database(pg_cluster, "production", prefix="restore")
    with _conn(target) as dst:
        r = import_day(dst, store, spec, DAY)
        n = dst.execute("SELECT count(*) FROM tickers").fetchone()
    assert r.rows == counts["tickers"] and n == (counts["tickers"],)


def test_a_schema_version_1_day_imports_with_the_new_columns_null(
        production_dsn: str, pg_cluster: PgCluster, store: S3Store) -> None:
    """Version 1 had no orderbook_deltas.ts_rank: rewrite an export as v1 would have written it."""
    fill(production_dsn)
    spec = TABLES["orderbook_deltas"]
    with _conn(production_dsn) as src:
        export_day(src, store, spec, DAY, SMALL)
    prefix = day_prefix(store, spec, DAY)
    doc = json.loads(store.get_bytes(prefix + MANIFEST_NAME) or b"")
    for part in doc["parts"]:
        table = pq.read_table(io.BytesIO(store.get_bytes(prefix + part["file"]) or b"")).drop_columns(["ts_rank"])
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        body = buf.getvalue()
        store.put_bytes(prefix + part["file"], body, "application/vnd.apache.parquet")
        part.update(bytes=len(body), sha256=hashlib.sha256(body).hexdigest())
    doc["schema_version"] = 1
    doc["columns"] = [c for c in doc["columns"] if c["name"] != "ts_rank"]
    store.put_bytes(prefix + MANIFEST_NAME, json.dumps(doc).encode(), "application/json")

    target = fresh_database(pg_cluster, "production", prefix="restore")
    with _conn(target) as dst, _conn(production_dsn) as src:
        r = import_day(dst, store, spec, DAY)
        got = dst.execute("SELECT count(*), count(ts_rank) FROM orderbook_deltas").fetchone()
        want = src.execute("SELECT count(*) FROM orderbook_deltas WHERE exchange_ts >= %s AND exchange_ts < %s",
                           (doc["range_us"][0], doc["range_us"][1])).fetchone()
    assert r.rows == doc["row_count"] and want is not None and got == (want[0], 0)


def test_export_and_import_draw_progress_only_when_asked_or_on_a_terminal(
        production_dsn: str, pg_cluster: PgCluster, store: S3Store, s3_endpoint: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    from kalshi_data.__main__ import main

    fill(production_dsn)
    common = ["--bucket", store.bucket, "--endpoint-url", s3_endpoint, "--table", "trades", "--table", "tickers",
              "--day", DAY.isoformat()]
    assert main(["export", "--dsn", production_dsn, *common, "--no-wait-for-sync"]) == 0
    out, err = capsys.readouterr()
    assert out.count("exported ") == 2 and err == ""  # not a terminal: no bar, journals stay clean
    target = fresh_database(pg_cluster, "production", prefix="restore")
    assert main(["import", "--dsn", target, *common, "--progress"]) == 0
    out, err = capsys.readouterr()
    assert out.count("imported ") == 2
    assert "import" in err and "table-days" in err and "rows/s" in err and "ETA" in err

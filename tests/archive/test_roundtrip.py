"""Export -> import against real PostgreSQL and a real S3-compatible server (moto server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from kalshi_data.archive import (
    MANIFEST_NAME,
    TABLES,
    ExportOptions,
    ManifestError,
    S3Store,
    export_day,
    import_day,
)
from kalshi_data.archive.days import day_range_us
from kalshi_data.archive.export import day_prefix
from shared.pgcluster import PgCluster
from tests.archive._data import DAY, day_rows, fill
from tests.fix_db import fresh_database

REPO = Path(__file__).resolve().parents[2]
SMALL = ExportOptions(max_rows_per_part=37, row_group_rows=10)


def _connect(dsn: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def _keys(store: S3Store, table: str) -> dict[str, str]:
    prefix = day_prefix(store, TABLES[table], DAY)
    return {k: str(store.head(k)["ETag"]) for k in store.list_keys(prefix)}  # type: ignore[index]


def _manifest(store: S3Store, table: str) -> dict:  # type: ignore[type-arg]
    raw = store.get_bytes(day_prefix(store, TABLES[table], DAY) + MANIFEST_NAME)
    assert raw is not None
    return json.loads(raw)  # type: ignore[no-any-return]


def test_round_trip_every_table_is_exact(production_dsn: str, pg_cluster: PgCluster, store: S3Store) -> None:
    counts = fill(production_dsn)
    target = fresh_database(pg_cluster, "production", prefix="restore")
    with _connect(production_dsn) as src, _connect(target) as dst:
        for name, spec in TABLES.items():
            result = export_day(src, store, spec, DAY, SMALL)
            assert (result.status, result.rows) == ("exported", counts[name])
            assert result.parts == -(-counts[name] // 37)
            m = _manifest(store, name)
            assert m["row_count"] == counts[name] and m["schema_version"] == 2
            assert len(m["parts"]) == result.parts
            if spec.time_column:
                lo, hi = day_range_us(DAY)
                assert (m["min_ts"], m["max_ts"]) == (lo, hi - 1)  # both edges in, outside rows out
            imported = import_day(dst, store, spec, DAY)
            assert (imported.rows, imported.inserted, imported.present) == (counts[name], counts[name], 0)
            assert day_rows(target, spec) == day_rows(production_dsn, spec), name
            again = import_day(dst, store, spec, DAY)  # idempotent: everything already present
            assert (again.inserted, again.present) == (0, counts[name])
        # the imported day got its own partition instead of landing in DEFAULT
        assert dst.execute("SELECT to_regclass('trades_p20261120') IS NOT NULL").fetchone() == (True,)


def test_parts_are_sorted_typed_zstd(production_dsn: str, store: S3Store, tmp_path: Path) -> None:
    fill(production_dsn)
    with _connect(production_dsn) as src:
        export_day(src, store, TABLES["trades"], DAY, SMALL)
    m = _manifest(store, "trades")
    prefix = day_prefix(store, TABLES["trades"], DAY)
    rows = []
    for part in m["parts"]:
        local = tmp_path / part["file"]
        store.download_file(prefix + part["file"], local)
        f = pq.ParquetFile(local)
        assert f.metadata.row_group(0).column(0).compression == "ZSTD"
        assert f.metadata.num_rows == part["rows"] and f.metadata.num_row_groups == -(-part["rows"] // 10)
        assert [c.column_index for c in f.metadata.row_group(0).sorting_columns] == [1, 2, 0]
        t = f.read()
        assert str(t.schema.field("trade_id").type) == "extension<arrow.uuid>"
        assert [str(t.schema.field(c).type) for c in ("exchange_ts", "yes_price", "count")] == \
            ["int64", "int32", "int64"]
        rows += list(zip(t.column("ticker").to_pylist(), t.column("exchange_ts").to_pylist()))
    assert rows == sorted(rows) and len(rows) == m["row_count"]


def test_rerun_is_a_no_op(production_dsn: str, store: S3Store) -> None:
    fill(production_dsn)
    with _connect(production_dsn) as src:
        export_day(src, store, TABLES["tickers"], DAY, SMALL)
        before = _keys(store, "tickers")
        again = export_day(src, store, TABLES["tickers"], DAY, SMALL)
    assert again.status == "unchanged" and again.rows == 120
    assert _keys(store, "tickers") == before  # same objects, same ETags: nothing rewritten


def test_force_replaces_atomically(production_dsn: str, store: S3Store) -> None:
    fill(production_dsn)
    spec = TABLES["trades"]
    prefix = day_prefix(store, spec, DAY)
    with _connect(production_dsn) as src:
        export_day(src, store, spec, DAY, SMALL)
        old = _manifest(store, "trades")
        old_parts = {prefix + p["file"] for p in old["parts"]}
        fill(production_dsn, n=30, seed=1)  # late rows arrive for the same day
        seen: dict[str, object] = {}

        def at_manifest_time() -> None:
            # all new parts are up, the old day is still complete and untouched
            seen["manifest"] = _manifest(store, "trades")["run_id"]
            seen["old_parts_present"] = old_parts <= set(store.list_keys(prefix))

        r = export_day(src, store, spec, DAY, ExportOptions(max_rows_per_part=37, force=True,
                                                            before_manifest=at_manifest_time))
    assert seen == {"manifest": old["run_id"], "old_parts_present": True}
    new = _manifest(store, "trades")
    assert r.rows == new["row_count"] == 150 and new["run_id"] != old["run_id"]
    assert set(store.list_keys(prefix)) == {prefix + MANIFEST_NAME} | {prefix + p["file"] for p in new["parts"]}


def test_crash_between_parts_and_manifest_leaves_no_manifest(
        production_dsn: str, store: S3Store, s3_endpoint: str) -> None:
    fill(production_dsn)
    # A real crash: the exporter process dies (os._exit, no cleanup) after its last part upload.
    script = (
        "import os, sys, psycopg\n"
        "from kalshi_data.archive import TABLES, ExportOptions, S3Location, S3Store, export_day\n"
        "from tests.archive._data import DAY\n"
        "st = S3Store(S3Location(bucket=sys.argv[2], endpoint_url=sys.argv[3]))\n"
        "opts = ExportOptions(max_rows_per_part=37, before_manifest=lambda: os._exit(9))\n"
        "with psycopg.connect(sys.argv[1], autocommit=True) as c:\n"
        "    export_day(c, st, TABLES['trades'], DAY, opts)\n")
    proc = subprocess.run([sys.executable, "-c", script, production_dsn, store.bucket, s3_endpoint],
                          cwd=REPO, env=dict(os.environ), capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 9, proc.stderr
    prefix = day_prefix(store, TABLES["trades"], DAY)
    orphans = set(store.list_keys(prefix))
    assert len(orphans) == 4 and prefix + MANIFEST_NAME not in orphans  # parts, but no manifest
    with _connect(production_dsn) as src:
        with pytest.raises(ManifestError, match="no manifest"):  # an importer will not touch it
            import_day(src, store, TABLES["trades"], DAY)
        r = export_day(src, store, TABLES["trades"], DAY, SMALL)  # the rerun completes and tidies up
    assert r.status == "exported" and r.rows == 120
    keys = set(store.list_keys(prefix))
    assert prefix + MANIFEST_NAME in keys and not keys & orphans


def test_dataset_reads_with_hive_partitioning(production_dsn: str, store: S3Store, s3_endpoint: str) -> None:
    from datetime import timedelta

    fill(production_dsn)
    fill(production_dsn, day=DAY + timedelta(days=1), n=50, seed=2)
    with _connect(production_dsn) as src:
        # each fill also puts a row just outside its day, i.e. into the neighbouring day
        rows = [export_day(src, store, TABLES["trades"], d, SMALL).rows for d in (DAY, DAY + timedelta(days=1))]
    assert rows == [121, 51]
    host = s3_endpoint.removeprefix("http://")
    fs = pafs.S3FileSystem(endpoint_override=host, scheme="http", access_key="testing",
                           secret_key="testing", region="us-east-1")
    dataset = ds.dataset(f"{store.bucket}/table=trades", filesystem=fs, format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == 172 and "date" in table.column_names
    one_day = dataset.to_table(filter=ds.field("date") == "2026-11-21").num_rows \
        if dataset.schema.field("date").type == "string" else \
        dataset.to_table(filter=ds.field("date") == DAY + timedelta(days=1)).num_rows
    assert one_day == 51


def test_import_refuses_parts_that_disagree_with_the_manifest(
        production_dsn: str, store: S3Store, tmp_path: Path) -> None:
    fill(production_dsn)
    spec = TABLES["orderbook_deltas"]
    with _connect(production_dsn) as src:
        export_day(src, store, spec, DAY, SMALL)
    m = _manifest(store, "orderbook_deltas")
    prefix = day_prefix(store, spec, DAY)
    # the last part replaced by a copy of the first: valid Parquet, wrong bytes
    first = tmp_path / "first.parquet"
    store.download_file(prefix + m["parts"][0]["file"], first)
    store.upload_file(first, prefix + m["parts"][-1]["file"], {}, "application/octet-stream")
    with _connect(production_dsn) as dst:
        dst.execute("DELETE FROM orderbook_deltas")  # the same database serves as import target
        with pytest.raises(ManifestError, match="bytes, the manifest says|sha256"):
            import_day(dst, store, spec, DAY)
        # nothing half-written: the earlier, valid parts were rolled back with the day
        assert dst.execute("SELECT count(*) FROM orderbook_deltas").fetchone() == (0,)
        # a manifest whose counts disagree with its parts is refused outright
        m["row_count"] += 1
        store.put_bytes(prefix + MANIFEST_NAME, json.dumps(m).encode(), "application/json")
        with pytest.raises(ManifestError, match="not the sum of its parts"):
            import_day(dst, store, spec, DAY)


def test_a_day_that_changed_in_production_is_exported_again(production_dsn: str, store: S3Store) -> None:
    """Trades backfilled into an archived day (count differs) and a coverage window closed since
    (same count, newer update) both make the next run export the day again; --verify reports it."""
    from kalshi_data.archive import verify_day

    counts = fill(production_dsn)
    trades, coverage = TABLES["trades"], TABLES["coverage_events"]
    with _connect(production_dsn) as src:
        for spec in (trades, coverage):
            assert export_day(src, store, spec, DAY, SMALL).status == "exported"
            assert verify_day(src, store, spec, DAY).status == "ok"
        assert _manifest(store, "trades")["row_count"] == counts["trades"]
        assert _manifest(store, "coverage_events")["updated_through"] is not None
        assert export_day(src, store, trades, DAY, SMALL).status == "unchanged"

        fill(production_dsn, n=30, seed=1)  # late trades (and coverage rows) for the same day
        src.execute("UPDATE coverage_events SET recovered = true, updated_at = updated_at + 1 "
                    "WHERE event_id = (SELECT event_id FROM coverage_events ORDER BY event_id LIMIT 1)")
        check = verify_day(src, store, trades, DAY)
        assert (check.status, check.production_rows, check.archived_rows) == ("differs", 150, 120)
        again = export_day(src, store, trades, DAY, SMALL)
        assert (again.status, again.rows) == ("re-exported", 150)
        assert _manifest(store, "trades")["row_count"] == 150
        assert verify_day(src, store, trades, DAY).status == "ok"
        assert export_day(src, store, coverage, DAY, SMALL).status == "re-exported"
        # an update in place alone (same count) is caught through updated_through
        src.execute("UPDATE coverage_events SET updated_at = updated_at + 5 WHERE event_id = (SELECT event_id "
                    "FROM coverage_events WHERE window_start >= %s AND window_start < %s "
                    "ORDER BY updated_at DESC LIMIT 1)", day_range_us(DAY))
        c = verify_day(src, store, coverage, DAY)
        assert c.status == "differs" and c.production_rows == c.archived_rows
        assert export_day(src, store, coverage, DAY, SMALL).status == "re-exported"
        assert verify_day(src, store, TABLES["markets"], DAY).status == "missing"

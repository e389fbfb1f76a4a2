"""The archive's pure parts: manifest validation, textfile merging, day parsing, the timer's
command lines. No database, no S3."""

from __future__ import annotations

import json
import re
import shlex
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from kalshi_data.__main__ import build_parser
from kalshi_data.archive import TABLES, Manifest, ManifestError
from kalshi_data.archive._convert import uuid_from_text, uuid_to_text
from kalshi_data.archive.days import day_range_us, days_between, parse_day
from kalshi_data.archive.manifest import Part, columns_of
from kalshi_data.archive.textfile import write_textfile
from shared.metrics import ArchiveMetrics

REPO = Path(__file__).resolve().parents[2]


def _manifest(**over: object) -> bytes:
    spec = TABLES["trades"]
    m = Manifest(table="trades", day="2026-11-20", kind="day", time_column="exchange_ts",
                 range_us=day_range_us(date(2026, 11, 20)), run_id="r", created_at="t", row_count=3,
                 min_ts=1, max_ts=2, sort_key=spec.sort_key, columns=columns_of(spec),
                 parts=(Part("part-r-0000.parquet", 2, 10, "ab", 1, 1), Part("part-r-0001.parquet", 1, 5, "cd", 2, 2)))
    doc = json.loads(m.to_json())
    doc.update(over)
    return json.dumps(doc).encode()


def test_manifest_round_trip_and_refusals() -> None:
    m = Manifest.from_json(_manifest(), "x")
    assert m.row_count == 3 and [p.rows for p in m.parts] == [2, 1]
    m.check_table(TABLES["trades"], "x")
    with pytest.raises(ManifestError, match="expected tickers"):
        m.check_table(TABLES["tickers"], "x")
    with pytest.raises(ManifestError, match="not the sum of its parts"):
        Manifest.from_json(_manifest(row_count=4), "x")
    with pytest.raises(ManifestError, match="newer than this kalshi-data understands"):
        Manifest.from_json(_manifest(schema_version=99), "x")
    with pytest.raises(ManifestError, match="not a kalshi-data archive manifest"):
        Manifest.from_json(b'{"hello": 1}', "x")
    with pytest.raises(ManifestError, match="malformed manifest"):
        Manifest.from_json(b"{not json", "x")


def test_uuid_conversion_keeps_nulls_and_slices() -> None:
    text = ["0e661d6c-2049-4c0e-99fb-61ee909e863d", None, "FFFFFFFF-0000-4000-8000-00000000000A"]
    arr = uuid_from_text(pa.array(text))
    assert str(arr.type) == "extension<arrow.uuid>" and arr.null_count == 1
    assert uuid_to_text(arr).to_pylist() == [text[0], None, text[2].lower()]
    assert uuid_to_text(arr.slice(2)).to_pylist() == [text[2].lower()]
    with pytest.raises(ValueError):
        uuid_from_text(pa.array(["not-a-uuid"]))


def test_textfile_accumulates_counters_and_keeps_other_tables(tmp_path: Path) -> None:
    path = tmp_path / "kalshi_export.prom"
    for table, rows in (("trades", 10), ("trades", 5), ("tickers", 7)):
        reg = CollectorRegistry()
        m = ArchiveMetrics(reg)
        m.export_rows_total.labels(table=table).inc(rows)
        m.export_duration_seconds.labels(table=table).observe(2.0)
        m.export_lag_seconds.labels(table=table).set(rows)
        write_textfile(path, reg)
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for f in text_string_to_metric_families(path.read_text()) for s in f.samples}
    assert got[("export_rows_total", (("table", "trades"),))] == 15
    assert got[("export_rows_total", (("table", "tickers"),))] == 7
    assert got[("export_duration_seconds_count", (("table", "trades"),))] == 2
    assert got[("export_duration_seconds_bucket", (("le", "5.0"), ("table", "trades")))] == 2
    assert got[("export_lag_seconds", (("table", "trades"),))] == 5  # gauges are replaced
    assert not any(name.endswith("_created") for name, _ in got)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [path.name]


def test_days() -> None:
    today = date(2026, 11, 25)
    assert parse_day("yesterday", today) == date(2026, 11, 24)
    assert parse_day("2026-02-28", today) == date(2026, 2, 28)
    assert days_between(date(2026, 2, 27), date(2026, 3, 1))[-1] == date(2026, 3, 1)
    assert day_range_us(date(1970, 1, 2)) == (86_400_000_000, 172_800_000_000)
    with pytest.raises(ValueError, match="not a day"):
        parse_day("2026-13-01", today)


def test_timer_commands_parse() -> None:
    """Every ExecStart of the export unit is a valid ``kalshi-data export`` command line."""
    unit = (REPO / "systemd" / "kalshi-export.service").read_text()
    cmds = re.findall(r"^ExecStart=/bin/sh -c '(.*)'$", unit, re.MULTILINE)
    assert len(cmds) == 5
    for cmd in cmds:
        argv = shlex.split(cmd.replace('"$(date -u -d yesterday +%%F)"', "2026-11-24"))
        assert argv[:2] == ["exec", "/opt/kalshi-data/.venv/bin/kalshi-data"]
        args = build_parser().parse_args(argv[2:])
        assert args.command == "export" and args.config == "/etc/kalshi/export.yaml"
        assert args.metrics_file and args.table[0] in TABLES and args.day == "2026-11-24"

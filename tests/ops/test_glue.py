"""terraform/glue.tf: the optional Glue catalog over the archive, parsed offline, checked against
the archive schema the exporter writes (kalshi_data/archive/schema.py)."""

from __future__ import annotations

from typing import Any

from kalshi_data.archive.schema import TABLES

from .test_terraform import load_all

HIVE = {"text": "string", "bigint": "bigint", "integer": "int", "smallint": "smallint",
        "boolean": "boolean", "uuid": "binary", "jsonb": "string"}


def test_glue_catalog_is_optional_and_off_by_default() -> None:
    tf = load_all()
    assert tf["variable"]["glue_catalog"]["default"] is False
    db = tf["resource"]["aws_glue_catalog_database"]["archive"]
    assert db["count"] == "${var.glue_catalog ? 1 : 0}"
    table = tf["resource"]["aws_glue_catalog_table"]["archive"]
    assert table["for_each"] == "${var.glue_catalog ? local.glue_tables : {}}"


def test_glue_tables_match_the_archive_schema_and_its_hive_layout() -> None:
    tf = load_all()
    glue: dict[str, Any] = tf["locals"]["glue_tables"]
    assert sorted(glue) == sorted(TABLES)
    for name, spec in TABLES.items():
        assert [tuple(c) for c in glue[name]] == [(c.name, HIVE[c.pg_type]) for c in spec.columns], name
    table = tf["resource"]["aws_glue_catalog_table"]["archive"]
    params = table["parameters"]
    assert params["projection.enabled"] == "true" and params["projection.date.type"] == "date"
    assert params["projection.date.format"] == "yyyy-MM-dd"
    assert params["storage.location.template"].endswith("table=${each.key}/date=$${date}/")
    storage = table["storage_descriptor"][0] if isinstance(table["storage_descriptor"], list) else table["storage_descriptor"]
    assert storage["location"].endswith("table=${each.key}/")
    keys = table["partition_keys"]
    keys = keys if isinstance(keys, list) else [keys]
    assert [(k["name"], k["type"]) for k in keys] == [("date", "string")]

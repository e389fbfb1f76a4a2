# Optional Glue Data Catalog over the Parquet archive, so Athena queries it where it lies.
#
# The archive is Hive-style (s3://<bucket>/[prefix/]table=<t>/date=YYYY-MM-DD/part-*.parquet plus
# a _manifest.json Athena ignores). Each table uses partition projection on `date`, so no crawler
# and no MSCK REPAIR: a day is queryable as soon as `kalshi-data export` writes it.
#   SELECT ticker, count(*) FROM kalshi_prod_archive.trades WHERE date = '2026-11-24' GROUP BY 1
# Columns and types follow kalshi_data/archive/schema.py (tests/ops/test_terraform.py checks):
# times are bigint microseconds, prices int dollars x 10,000, sizes bigint contracts x 100; UUIDs
# are 16-byte binary (Parquet UUID; to_hex() in Athena), JSON columns are text.
#
# Readers should follow the manifests: a crashed export can leave parts without one until the
# next export of that day removes them (docs/analysts.md); `kalshi-data query` does follow them.

locals {
  glue_prefix = trim(var.glue_archive_prefix, "/") == "" ? "" : "${trim(var.glue_archive_prefix, "/")}/"

  # table -> ordered [name, hive type] pairs (kalshi_data/archive/schema.py, schema version 2)
  glue_tables = {
    trades = [
      ["trade_id", "binary"], ["ticker", "string"], ["exchange_ts", "bigint"], ["yes_price", "int"],
      ["no_price", "int"], ["count", "bigint"], ["taker_side", "string"], ["taker_outcome_side", "string"],
      ["taker_book_side", "string"], ["is_block_trade", "boolean"], ["source", "string"],
      ["received_at", "bigint"], ["gatherer_id", "string"], ["merged_at", "bigint"],
    ]
    orderbook_deltas = [
      ["ticker", "string"], ["exchange_ts", "bigint"], ["side", "string"], ["price", "int"],
      ["delta", "bigint"], ["occurrence", "smallint"], ["seq", "bigint"], ["received_at", "bigint"],
      ["gatherer_id", "string"], ["merged_at", "bigint"], ["ts_rank", "smallint"],
    ]
    orderbook_snapshots = [
      ["ticker", "string"], ["snapshot_ts", "bigint"], ["source", "string"], ["yes_levels", "string"],
      ["no_levels", "string"], ["seq", "bigint"], ["last_delta_ts", "bigint"],
      ["last_delta_occurrence", "smallint"], ["received_at", "bigint"], ["gatherer_id", "string"],
      ["merged_at", "bigint"], ["cut_kind", "string"], ["cut_ts", "bigint"], ["cut_side", "string"],
      ["cut_price", "int"], ["cut_delta", "bigint"], ["cut_occurrence", "smallint"],
    ]
    tickers = [
      ["ticker", "string"], ["exchange_ts", "bigint"], ["yes_bid", "int"], ["yes_ask", "int"],
      ["price", "int"], ["volume", "bigint"], ["open_interest", "bigint"], ["dollar_volume", "bigint"],
      ["dollar_open_interest", "bigint"], ["content_hash", "bigint"], ["received_at", "bigint"],
      ["gatherer_id", "string"], ["merged_at", "bigint"],
    ]
    coverage_events = [
      ["gatherer_id", "string"], ["event_id", "binary"], ["scope", "string"], ["ticker", "string"],
      ["kind", "string"], ["window_start", "bigint"], ["window_end", "bigint"], ["recovered", "boolean"],
      ["detail", "string"], ["created_at", "bigint"], ["updated_at", "bigint"], ["merged_at", "bigint"],
    ]
    markets = [
      ["ticker", "string"], ["event_ticker", "string"], ["series_ticker", "string"],
      ["market_type", "string"], ["title", "string"], ["subtitle", "string"], ["status", "string"],
      ["open_time", "bigint"], ["close_time", "bigint"], ["expiration_time", "bigint"],
      ["result", "string"], ["exchange_updated_ts", "bigint"], ["raw", "string"],
      ["received_at", "bigint"], ["updated_at", "bigint"], ["gatherer_id", "string"],
      ["merged_at", "bigint"],
    ]
    events = [
      ["event_ticker", "string"], ["series_ticker", "string"], ["title", "string"],
      ["sub_title", "string"], ["category", "string"], ["mutually_exclusive", "boolean"],
      ["status", "string"], ["exchange_updated_ts", "bigint"], ["raw", "string"],
      ["received_at", "bigint"], ["updated_at", "bigint"], ["gatherer_id", "string"],
      ["merged_at", "bigint"],
    ]
    series = [
      ["series_ticker", "string"], ["title", "string"], ["category", "string"], ["frequency", "string"],
      ["exchange_updated_ts", "bigint"], ["raw", "string"], ["received_at", "bigint"],
      ["updated_at", "bigint"], ["gatherer_id", "string"], ["merged_at", "bigint"],
    ]
  }
}

resource "aws_glue_catalog_database" "archive" {
  count       = var.glue_catalog ? 1 : 0
  name        = replace("${local.name}_archive", "-", "_")
  description = "kalshi-data Parquet archive in s3://${aws_s3_bucket.archive.bucket}/${local.glue_prefix} (partition projection on date)"
}

resource "aws_glue_catalog_table" "archive" {
  for_each      = var.glue_catalog ? local.glue_tables : {}
  database_name = aws_glue_catalog_database.archive[0].name
  name          = each.key
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    EXTERNAL                        = "TRUE"
    classification                  = "parquet"
    "parquet.compression"           = "ZSTD"
    "projection.enabled"            = "true"
    "projection.date.type"          = "date"
    "projection.date.format"        = "yyyy-MM-dd"
    "projection.date.range"         = "${var.glue_projection_start},NOW"
    "projection.date.interval"      = "1"
    "projection.date.interval.unit" = "DAYS"
    "storage.location.template"     = "s3://${aws_s3_bucket.archive.bucket}/${local.glue_prefix}table=${each.key}/date=$${date}/"
  }

  partition_keys {
    name    = "date"
    type    = "string"
    comment = "UTC day (YYYY-MM-DD) of the row's time column; reference tables: the day of the snapshot"
  }

  storage_descriptor {
    location      = "s3://${aws_s3_bucket.archive.bucket}/${local.glue_prefix}table=${each.key}/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    dynamic "columns" {
      for_each = each.value
      content {
        name = columns.value[0]
        type = columns.value[1]
      }
    }
  }
}

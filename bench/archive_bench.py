"""Benchmark of ``kalshi-data export`` (and optionally ``import``) on one big trades day.

Run by hand (not collected by pytest)::

    .venv/bin/python bench/archive_bench.py --rows 10000000 [--import]

It creates a throwaway PostgreSQL cluster, fills one UTC day of ``trades`` with ``--rows`` rows
(5,000 tickers, random trade ids, realistic value ranges), starts moto's S3 server in its own
process, and runs the real CLI in a child process, reporting wall time, rows/s and the child's
peak RSS (``ru_maxrss`` from ``wait4``, so the database and the S3 server are not counted).
Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kalshi_data.archive.days import day_range_us
from shared.migrate import apply_migrations
from shared.pgcluster import PgCluster

DAY = date(2026, 11, 20)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fill(dsn: str, rows: int) -> float:
    lo, hi = day_range_us(DAY)
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS trades_p{DAY:%Y%m%d} PARTITION OF trades "
                     f"FOR VALUES FROM ({lo}) TO ({hi})")
        step = 1_000_000
        for start in range(0, rows, step):
            n = min(step, rows - start)
            conn.execute(
                "INSERT INTO trades SELECT gen_random_uuid(), 'KXBTC-25NOV20-T' || (i %% 5000), "
                "%s + (i::bigint * 8639) %% 86400000000 / 1000 * 1000, 1 + i %% 9999, 9999 - i %% 9999, "
                "100 * (1 + i %% 500), CASE WHEN i %% 2 = 0 THEN 'yes' ELSE 'no' END, NULL, NULL, "
                "NULL, CASE WHEN i %% 3 = 0 THEN 'rest' ELSE 'ws' END, %s + i %% 86400000000, "
                "'gatherer-' || (1 + i %% 3), %s + i %% 86400000000 + 5000 "
                "FROM generate_series(%s::bigint, %s::bigint) i", (lo, lo, lo, start, start + n - 1))
        conn.execute("VACUUM ANALYZE trades")
    return time.monotonic() - started


def _run_measured(argv: list[str], env: dict[str, str]) -> tuple[int, float, int, str]:
    """Run ``argv``; return (exit code, wall seconds, peak RSS bytes, output)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.monotonic() - started, usage.ru_maxrss * 1024, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--max-rows-per-part", type=int, default=5_000_000)
    ap.add_argument("--import", dest="do_import", action="store_true", help="also time the import")
    args = ap.parse_args()

    env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
               AWS_DEFAULT_REGION="us-east-1")
    port = _free_port()
    s3 = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster = PgCluster.create(fast=True, name="archive-bench")
    try:
        endpoint = f"http://127.0.0.1:{port}"
        dsn = cluster.create_database("kalshi_prod")
        apply_migrations(dsn, "production")
        print(f"filling {args.rows:,} trades for {DAY} ...", flush=True)
        print(f"  filled in {_fill(dsn, args.rows):.1f} s", flush=True)
        import boto3

        deadline = time.monotonic() + 60
        while True:
            try:
                boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench",
                             aws_secret_access_key="bench", region_name="us-east-1").create_bucket(Bucket="bench")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        cli = [sys.executable, "-m", "kalshi_data"]
        common = ["--dsn", dsn, "--bucket", "bench", "--endpoint-url", endpoint, "--table", "trades",
                  "--day", DAY.isoformat()]
        rc, secs, rss, out = _run_measured(
            [*cli, "export", *common, "--no-wait-for-sync", "--max-rows-per-part", str(args.max_rows_per_part)], env)
        print(out.strip())
        if rc != 0:
            return rc
        print(f"EXPORT: {args.rows:,} rows in {secs:.1f} s wall (process incl. start-up) = "
              f"{args.rows / secs:,.0f} rows/s; peak RSS {rss / 2**20:.0f} MiB")
        if args.do_import:
            target = cluster.create_database("restore")
            apply_migrations(target, "production")
            rc, secs, rss, out = _run_measured([*cli, "import", *common[:-4], "--dsn", target,
                                                "--table", "trades", "--day", DAY.isoformat()], env)
            print(out.strip())
            if rc != 0:
                print(f"IMPORT failed (exit {rc}) after {secs:.1f} s; peak RSS {rss / 2**20:.0f} MiB")
                return rc
            print(f"IMPORT: {args.rows:,} rows in {secs:.1f} s wall = {args.rows / secs:,.0f} rows/s; "
                  f"peak RSS {rss / 2**20:.0f} MiB")
        return rc
    finally:
        cluster.destroy()
        s3.terminate()
        s3.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())

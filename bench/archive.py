"""archive: wraps the archive engineer's ``bench/archive_bench.py`` (export of one trades day to
S3-compatible storage) so ``python -m bench --archive`` can include it. Not in the default run:
it builds its own cluster and moto S3 server, and the 10 M-row day it is meant for takes longer
than the whole default budget; here it runs 1 M rows (300 k with ``--quick``). By hand::

    .venv/bin/python bench/archive_bench.py --rows 10000000 [--import]
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from ._model import Context, Row

SCRIPT = Path(__file__).resolve().parent / "archive_bench.py"


def run(ctx: Context) -> list[Row]:
    rows = 300_000 if ctx.quick else 1_000_000
    p = subprocess.run([sys.executable, str(SCRIPT), "--rows", str(rows)], capture_output=True,
                       text=True, timeout=900, check=False)
    m = re.search(r"EXPORT: ([\d,]+) rows in ([\d.]+) s wall .*?= ([\d,]+) rows/s; peak RSS "
                  r"(\d+) MiB", p.stdout)
    if p.returncode != 0 or m is None:
        return [Row("archive", "archive export: FAILED", "rows/s", ok=False,
                    note=(p.stdout + p.stderr).strip().splitlines()[-1][:200] if (
                        p.stdout + p.stderr).strip() else f"exit {p.returncode}")]
    return [Row("archive", f"archive export: {rows:,} trades → Parquet on S3 (moto)", "rows/s",
                peak_rss=int(m.group(4)) * 2**20,
                extra={"rows": rows, "wall_s": float(m.group(2)),
                       "rows_per_s": int(m.group(3).replace(",", ""))},
                note="one run (no reps); child process wall time incl. start-up")]

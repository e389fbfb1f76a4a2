"""``python -m bench [--quick] [--only NAME ...] [--reps N] [--soak [--soak-minutes M]]``: every benchmark of
docs performance.md, one child process each, then a table and ``bench/results/latest.json``.

Shared set-up, done once per run and torn down at the end whatever happens: a throwaway
PostgreSQL cluster with migrated templates, and frames recorded from the simulator in both
profiles (into a temp dir). Each benchmark child starts in its own session, so a timeout or
Ctrl-C stops it together with every process it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from . import report
from ._model import Context, Row

#: name -> (needs PostgreSQL, needs recorded frames, child timeout s)
BENCHES: dict[str, tuple[bool, bool, float]] = {
    "decode": (False, True, 240),
    "writer": (True, True, 300),
    "simulator": (False, True, 240),
    "e2e": (True, False, 300),
    "e2e_uvloop": (True, False, 300),
    "stacks": (False, True, 420),
    "dedup": (True, False, 300),
    "registry": (False, False, 300),
    "recovery": (True, False, 300),
    "backpressure": (False, False, 900),
    "archive": (True, False, 300),
    "books": (True, False, 600),
    "soak": (True, False, 3600),  # plus the soak's own minutes
    "coverage": (True, False, 7_200),
    "storage": (False, True, 420),  # starts its own cluster that preloads TimescaleDB
    "reconcile": (True, False, 7_200),  # a day of simulator history first: minutes to an hour
}
DEFAULT = [n for n in BENCHES if n not in ("archive", "soak", "coverage", "reconcile")]  # opt-in: --only NAME
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run (~2 minutes): small inputs")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help=f"run only these (repeatable or comma-separated): {', '.join(BENCHES)}")
    ap.add_argument("--reps", type=int, default=None, help="measured repetitions (default 5, "
                    "quick 2); one unmeasured warm-up rep always precedes them")
    ap.add_argument("--archive", action="store_true", help="also run the archive export bench")
    ap.add_argument("--soak", action="store_true", help="run the soak bench (alone, unless "
                    "--only names others): xl, gatherer + deduplicator, 5,000 msgs/s with "
                    "bursts of 50,000, RSS slope, lag, CPU s/M, loss against truth")
    ap.add_argument("--soak-minutes", type=float, default=30.0, metavar="M",
                    help="length of the soak's measured run (default 30; 2 for a smoke test)")
    ap.add_argument("--soak-preset", default="xl", choices=("medium", "large", "xl"),
                    help="the soak's simulator preset (default xl: 1,000,000 markets)")
    ap.add_argument("--reconcile-trades", type=int, default=2_500_000, metavar="N",
                    help="trades in the reconcile bench's simulated day (default 2,500,000; the "
                         "simulator needs ~10 minutes per million trades to make the day, ~7 GB "
                         "of RSS for 2.5 M)")
    ap.add_argument("--reconcile-preset", default="xl", choices=("medium", "large", "xl"),
                    help="the reconcile bench's simulator preset (default xl)")
    ap.add_argument("--out", type=Path, default=report.LATEST, help="JSON results path")
    return ap.parse_args(argv)


def _record_frames(frames_dir: Path, n: int, console: Console) -> dict[str, object]:
    """Both profiles at once (two processes: frame recording is CPU-bound)."""
    from .frames import PROFILES

    procs = []
    for p in PROFILES:
        code = ("import asyncio,sys,json; from bench.frames import record; from pathlib import "
                f"Path; print(json.dumps(asyncio.run(record(Path(sys.argv[1]), {p!r}, {n}))))")
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(frames_dir)], cwd=REPO,
                                      stdout=subprocess.PIPE, start_new_session=True))
    counts: dict[str, object] = {}
    try:
        for p, proc in zip(PROFILES, procs, strict=True):
            out, _ = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"recording {p} frames failed")
            counts[p] = json.loads(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    console.print(f"[dim]recorded frames: {counts}[/]")
    return counts


def _run_child(name: str, ctx: Context, timeout: float, console: Console) -> list[Row]:
    out = Path(ctx.workdir) / f"{name}.json"
    env = {**os.environ, "BENCH_CTX": ctx.dump(), "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "bench._child", name, str(out)], cwd=REPO,
                            env=env, start_new_session=True)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        console.print(f"[red]{name}: timed out after {timeout:.0f} s; stopping it[/]")
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        raise
    took = time.monotonic() - t0
    if not out.exists():
        return [Row(name, f"{name}: FAILED", "", note=f"no result (exit {proc.returncode})",
                    ok=False, extra={"seconds": round(took, 1)})]
    doc = json.loads(out.read_text())
    if "error" in doc:
        console.print(f"[red]{name} failed: {doc['error']}[/]\n[dim]{doc['traceback']}[/]")
        return [Row(name, f"{name}: FAILED", "", note=doc["error"][:200], ok=False,
                    extra={"seconds": round(took, 1)})]
    rows = [Row.from_dict(d) for d in doc["rows"]]
    console.print(f"[dim]{name}: {took:.0f} s[/]")
    for r in rows:
        r.extra.setdefault("bench_s", round(took, 1))
    return rows


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    console = report.make_console()
    names = [n for o in a.only for n in o.split(",") if n] or (["soak"] if a.soak
                                                                 else list(DEFAULT))
    if a.archive and "archive" not in names:
        names.append("archive")
    if a.soak and "soak" not in names:
        names.append("soak")
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        console.print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
        return 2
    reps = a.reps or (2 if a.quick else 5)
    started = datetime.now(UTC)
    t0 = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="kalshi-bench-"))
    cluster = None
    rows: list[Row] = []
    meta: dict[str, object] = {}
    pg_version = None
    try:
        if any(BENCHES[n][0] for n in names):
            from ._db import create_cluster, server_version

            console.print("[dim]creating PostgreSQL cluster…[/]")
            cluster = create_cluster()
            pg_version = server_version(cluster.dsn("postgres"))
        frames_dir = workdir / "frames"
        if any(BENCHES[n][1] for n in names):
            console.print("[dim]recording frames from the simulator (both profiles)…[/]")
            meta["frames"] = _record_frames(frames_dir, 15_000 if a.quick else 30_000, console)
        ctx = Context(quick=a.quick, reps=reps, workdir=str(workdir),
                      pg_dsn=cluster.dsn("postgres") if cluster else "",
                      frames_dir=str(frames_dir), soak_minutes=a.soak_minutes,
                      soak_preset=a.soak_preset, reconcile_trades=a.reconcile_trades,
                      reconcile_preset=a.reconcile_preset)
        for name in names:
            console.print(f"[bold]{name}[/] …")
            timeout = BENCHES[name][2] * (0.6 if a.quick else 1.0)
            if name == "soak":
                timeout = BENCHES[name][2] + a.soak_minutes * 60
            rows.extend(_run_child(name, ctx, timeout, console))
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
    finally:
        if cluster is not None:
            cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)
    duration = time.monotonic() - t0
    meta.update({
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(duration, 1),
        "quick": a.quick,
        "reps": reps,
        "benchmarks": names,
        "machine": report.machine_info(pg_version),
    })
    title = (f"kalshi-data bench — {started:%Y-%m-%d %H:%M} UTC, {duration:.0f} s, reps={reps}"
             f"{' (quick)' if a.quick else ''}")
    report.print_table(rows, title, console)
    report.write_json(rows, meta, a.out)
    console.print(f"[dim]wrote {a.out}[/]")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())

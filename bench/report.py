"""Results: a rich table on the terminal, ``bench/results/latest.json`` with machine info, and the
Markdown table the README quotes (``python -m bench.report --markdown``)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from ._model import Row

RESULTS = Path(__file__).resolve().parent / "results"
LATEST = RESULTS / "latest.json"
LIBS = ("psycopg", "psycopg-binary", "websockets", "orjson", "aiohttp", "prometheus-client",
        "rich", "httpx")


def machine_info(pg_version: str | None) -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    libs: dict[str, str | None] = {}
    for name in LIBS:
        try:
            libs[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            libs[name] = None
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "postgresql": pg_version,
        "libraries": libs,
        "loadavg_at_end": [round(x, 2) for x in load],
    }


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v >= 100_000:
        return f"{v / 1e6:.3f} M"
    if v >= 1000:
        return f"{v / 1e3:.1f} k"
    return f"{v:.1f}"


def _mb(b: int | None) -> str:
    return "—" if not b else f"{b / 2**20:.0f} MB"


def cpu_ratio(r: Row) -> float | None:
    """raw CPU per unit / ours CPU per unit: the throughput ratio if both were CPU-bound on a
    quiet machine (wall-clock rates suffer from other processes; CPU time much less)."""
    if r.raw is None or r.ours is None or not r.ours.cpu_s_per_m or not r.raw.cpu_s_per_m:
        return None
    return r.raw.cpu_s_per_m / r.ours.cpu_s_per_m


def _extra_text(r: Row) -> str:
    parts = []
    for k, v in r.extra.items():
        if isinstance(v, dict):  # one level, e.g. the soak's per-process figures
            parts.extend(f"{k}.{sk}={sv}" for sk, sv in v.items() if not isinstance(sv, dict | list))
        elif not isinstance(v, list):
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def table(rows: list[Row], title: str) -> Table:
    t = Table(title=title, show_lines=False, header_style="bold")
    for col, j in (("benchmark", "left"), ("unit", "left"), ("raw", "right"), ("ours", "right"),
                   ("ratio", "right"), ("CPU ratio", "right"), ("target", "left"),
                   ("CPU s/M raw", "right"), ("CPU s/M ours", "right"), ("spread raw/ours", "right"),
                   ("peak RSS", "right")):
        t.add_column(col, justify=j, no_wrap=col != "benchmark")  # type: ignore[arg-type]
    for r in rows:
        ratio, cr = r.ratio, cpu_ratio(r)
        met = r.met
        mark = "" if met is None else (" [green]✓[/]" if met else " [red]✗[/]")
        spread = "—"
        if r.raw or r.ours:
            spread = (f"±{r.raw.spread_pct / 2:.0f}%" if r.raw else "—") + " / " + (
                f"±{r.ours.spread_pct / 2:.0f}%" if r.ours else "—")
        t.add_row(
            r.name, r.unit,
            _fmt(r.raw.median) if r.raw else "—",
            _fmt(r.ours.median) if r.ours else "—",
            "—" if ratio is None else f"{ratio:.2f}",
            "—" if cr is None else f"{cr:.2f}",
            r.target + mark,
            f"{r.raw.cpu_s_per_m:.2f}" if r.raw else "—",
            f"{r.ours.cpu_s_per_m:.2f}" if r.ours else "—",
            spread,
            _mb(r.peak_rss),
        )
    return t


def markdown(rows: list[Row]) -> str:
    out = [("| benchmark | raw limit | ours | ratio | CPU ratio | target | CPU s/M (raw / ours) "
            "| peak RSS | other |"), "|---|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        ratio, cr = r.ratio, cpu_ratio(r)
        met = "" if r.met is None else (" ✓" if r.met else " ✗")
        cpu = (f"{r.raw.cpu_s_per_m:.2f}" if r.raw else "—") + " / " + (
            f"{r.ours.cpu_s_per_m:.2f}" if r.ours else "—")
        out.append(
            f"| {r.name} ({r.unit}) | {_fmt(r.raw.median) if r.raw else '—'} | "
            f"{_fmt(r.ours.median) if r.ours else '—'} | "
            f"{'—' if ratio is None else f'{ratio:.2f}'} | {'—' if cr is None else f'{cr:.2f}'} | "
            f"{r.target}{met} | {cpu} | {_mb(r.peak_rss)} | {_extra_text(r)} |")
    return "\n".join(out)


def write_json(rows: list[Row], meta: dict[str, Any], path: Path = LATEST) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {**meta, "results": [r.as_dict() for r in rows]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)


def load_json(path: Path = LATEST) -> tuple[dict[str, Any], list[Row]]:
    doc = json.loads(path.read_text())
    rows = [Row.from_dict(d) for d in doc.pop("results")]
    return doc, rows


def make_console() -> Console:
    """A console wide enough for the table even when output is piped (CI logs, tee)."""
    c = Console()
    return c if c.is_terminal and c.width >= 150 else Console(width=200)


def print_table(rows: list[Row], title: str, console: Console | None = None) -> None:
    console = console or make_console()
    console.print(table(rows, title))
    console.print("[bold]medians; spread = ±half the min–max range; CPU ratio = raw CPU/unit ÷ "
                  "ours (the throughput ratio on a quiet machine)[/]")
    for r in rows:
        bits = [b for b in (_extra_text(r), r.note) if b]
        if bits:
            console.print(f"  [cyan]{r.name}[/]: " + "; ".join(bits))


def main() -> None:
    ap = argparse.ArgumentParser(description="Show bench/results/latest.json")
    ap.add_argument("path", nargs="?", type=Path, default=LATEST)
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    a = ap.parse_args()
    meta, rows = load_json(a.path)
    if a.markdown:
        print(markdown(rows))
    else:
        print_table(rows, f"kalshi-data bench ({meta.get('started_at', '?')})")


if __name__ == "__main__":
    main()

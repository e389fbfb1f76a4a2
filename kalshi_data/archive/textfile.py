"""Write the archive's metrics for node-exporter's textfile collector, cumulatively and atomically.

``kalshi-data export`` is a oneshot job, so nothing is scraped from it directly: each run
writes a ``.prom`` file that node-exporter serves. For ``increase()`` and the ExportErrorRate /
S3UploadFailure alerts to work, counters and histograms must keep counting across runs, so this
run's samples are ADDED to the ones already in the file (gauges are replaced), and label sets
this run did not touch (other tables) are kept. Several runs may share one file: a lock file
serialises them, and the new text is written to a temporary file in the same directory and
renamed over the old one, so node-exporter never reads half a file.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

_Key = tuple[str, tuple[tuple[str, str], ...]]
_ADDITIVE = ("counter", "histogram", "summary")


class _Family:
    def __init__(self, name: str, kind: str, doc: str) -> None:
        self.name, self.kind, self.doc = name, kind, doc
        self.samples: dict[_Key, float] = {}


def write_textfile(path: Path, registry: CollectorRegistry) -> None:
    """Merge ``registry`` into the textfile at ``path`` and atomically replace it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = _parse(path.read_text()) if path.exists() else {}
        merged = _merge(old, _families(registry.collect()))
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            f.write(render(merged))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def _families(metrics: Iterable[object]) -> dict[str, _Family]:
    out: dict[str, _Family] = {}
    for m in metrics:
        fam = _Family(m.name, m.type, m.documentation)  # type: ignore[attr-defined]
        for s in m.samples:  # type: ignore[attr-defined]
            if s.name.endswith("_created"):
                continue  # per-process creation times mean nothing in an accumulated file
            fam.samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
        out[fam.name] = fam
    return out


def _parse(text: str) -> dict[str, _Family]:
    try:
        return _families(text_string_to_metric_families(text))
    except ValueError:
        return {}  # an unreadable old file is replaced rather than blocking the metrics


def _merge(old: dict[str, _Family], new: dict[str, _Family]) -> dict[str, _Family]:
    out = dict(old)
    for name, fam in new.items():
        prev = old.get(name)
        if prev is None or prev.kind != fam.kind:
            out[name] = fam
            continue
        merged = _Family(name, fam.kind, fam.doc)
        merged.samples = dict(prev.samples)
        for key, value in fam.samples.items():
            merged.samples[key] = value + prev.samples.get(key, 0.0) if fam.kind in _ADDITIVE else value
        out[name] = merged
    return out


def _sort_key(key: _Key) -> tuple[object, ...]:
    name, labels = key
    le = dict(labels).get("le")
    rest = tuple(kv for kv in labels if kv[0] != "le")
    suffix = 1 if name.endswith("_count") else 2 if name.endswith("_sum") else 0
    return (rest, suffix, float(le) if le is not None else 0.0, name)


def render(families: dict[str, _Family]) -> str:
    """Prometheus text format 0.0.4."""
    lines: list[str] = []
    for name in sorted(families):
        fam = families[name]
        exposed = f"{name}_total" if fam.kind == "counter" else name
        doc = fam.doc.replace("\\", r"\\").replace("\n", r"\n")
        lines += [f"# HELP {exposed} {doc}", f"# TYPE {exposed} {fam.kind}"]
        for key in sorted(fam.samples, key=_sort_key):
            sample, labels = key
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample}{{{text}}} {_fmt(fam.samples[key])}" if text
                         else f"{sample} {_fmt(fam.samples[key])}")
    return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")

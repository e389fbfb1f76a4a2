"""Cross-check: every metric alerts/ and grafana/ rely on (exported_metrics.py) is created by the
code, with the same type (test_live_metrics.py does the same against running processes).
"""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from shared import metrics as code_metrics

from .exported_metrics import ARCHIVE, DATABASE, DEDUPLICATOR, EXTERNAL, GATHERER

# prometheus-client reports a counter family without its `_total` suffix.
_TYPE_SUFFIX = {"counter": "_total"}


def families(*classes: type) -> dict[str, str]:
    """sample-family name (as PromQL sees it, `_total` included) -> type."""
    registry = CollectorRegistry()
    for cls in classes:
        cls(registry)
    code_metrics.add_process_collectors(registry)
    out = {}
    for fam in registry.collect():
        out[fam.name + _TYPE_SUFFIX.get(fam.type, "")] = fam.type
    return out


@pytest.mark.parametrize(
    ("expected", "classes"),
    [
        ({**GATHERER, **DATABASE}, ("GathererMetrics",)),
        ({**DEDUPLICATOR, **DATABASE}, ("DeduplicatorMetrics",)),
        (ARCHIVE, ("ArchiveMetrics",)),
    ],
    ids=["gatherer", "deduplicator", "archive"],
)
def test_code_exports_what_ops_uses(expected: dict[str, str], classes: tuple[str, ...]) -> None:
    exported = families(*(getattr(code_metrics, c) for c in classes))
    missing = sorted(set(expected) - set(exported))
    assert not missing, f"{classes}: metrics used by alerts/dashboards but not created: {missing}"
    wrong = {n: (t, exported[n]) for n, t in expected.items() if exported[n] != t}
    assert not wrong, f"type differs (ops expects, code has): {wrong}"


def test_process_collector_metrics_are_exported() -> None:
    exported = families(code_metrics.GathererMetrics)
    for name in ("process_start_time_seconds", "process_resident_memory_bytes"):
        assert exported.get(name) == EXTERNAL[name], name


def test_no_ticker_label_in_code_metrics() -> None:
    for cls in (
        code_metrics.GathererMetrics,
        code_metrics.DeduplicatorMetrics,
        code_metrics.ArchiveMetrics,
    ):
        obj = cls(CollectorRegistry())
        for attr, metric in vars(obj).items():
            labelnames = getattr(metric, "_labelnames", ())
            assert "ticker" not in labelnames, f"{cls.__name__}.{attr} has a ticker label"

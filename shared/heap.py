"""The cyclic garbage collector's pauses: measured, and kept off the long-lived state.

CPython runs a full (generation 2) collection whenever the objects promoted since the last one
pass a quarter of those that survived it, and a full collection walks every tracked object with
the event loop stopped. A gatherer holding Kalshi's whole catalogue (1,000,000 markets: the
registry, the books and the subscriptions, ~2.5 GB) paused 3 to 7 s per full collection, about
once a minute, in the xl soak (py-spy: 12 % of its CPU in ``gc_collect_main``): every socket
stalled for that long, and the rows received meanwhile merged late.

``gc.freeze()`` moves every object tracked now to a permanent generation that collections skip,
so a full collection walks only what was made since. Frozen objects are still freed by reference
counting when dropped. Two kinds of garbage stay until the process ends: a reference cycle frozen
while already garbage (so each freeze runs a full collection first), and a cycle through a frozen
object that becomes garbage later. Only the first collection walks the whole heap; later ones walk
what the interval made. The xl soak measures both costs: ``python_gc_pause_seconds`` and the RSS
slope (0.06 MB/min over 30 minutes).
"""

from __future__ import annotations

import asyncio
import bisect
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import HistogramMetricFamily

log = logging.getLogger("shared.heap")

_PAUSE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_GENERATIONS = ("0", "1", "2")


class _Pauses:
    """Process-wide pause counts, kept in plain lists: the ``gc.callbacks`` hook may run inside
    any allocation, so it takes no lock (a metric's lock could be the one held by the code it
    interrupted) and allocates nothing tracked."""

    def __init__(self) -> None:
        self.buckets = [[0] * (len(_PAUSE_BUCKETS) + 1) for _ in _GENERATIONS]
        self.sums = [0.0] * len(_GENERATIONS)
        self.started = 0.0

    def hook(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        seconds = time.perf_counter() - self.started
        generation = info.get("generation", -1)
        if not 0 <= generation < len(_GENERATIONS):
            return
        self.sums[generation] += seconds
        self.buckets[generation][bisect.bisect_left(_PAUSE_BUCKETS, seconds)] += 1

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "python_gc_pause_seconds", "Wall time of one garbage collection, by generation "
            "(the event loop is stopped meanwhile)", labels=["generation"])
        for g, name in enumerate(_GENERATIONS):
            cumulative, total = [], 0
            for bound, n in zip((*map(str, _PAUSE_BUCKETS), "+Inf"), self.buckets[g], strict=True):
                total += n
                cumulative.append((bound, total))
            family.add_metric([name], cumulative, self.sums[g])
        yield family


_PAUSES = _Pauses()
if _PAUSES.hook not in gc.callbacks:
    gc.callbacks.append(_PAUSES.hook)


class GcMetrics:
    """``python_gc_pause_seconds{generation}`` (every collection of the process, timed by a
    ``gc.callbacks`` hook) and ``python_gc_frozen_objects_total`` (objects moved to the permanent
    generation by ``freeze``) on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        registry.register(_PAUSES)
        self.frozen = Counter("python_gc_frozen_objects_total",
                              "Objects moved to the permanent generation by gc.freeze()",
                              registry=registry)


def freeze(metrics: GcMetrics | None = None) -> int:
    """Collect, then move every surviving tracked object to the permanent generation; returns
    how many were moved."""
    gc.collect()
    before = gc.get_freeze_count()
    gc.freeze()
    n = gc.get_freeze_count() - before
    if metrics is not None:
        metrics.frozen.inc(n)
    return n


async def freeze_periodically(interval_s: float, metrics: GcMetrics | None = None) -> None:
    """Freeze what has lived ``interval_s`` (the state built since: new markets' books and
    registry entries) so full collections keep walking only young objects."""
    while True:
        await asyncio.sleep(interval_s)
        n = freeze(metrics)
        log.debug("froze %d long-lived objects (%d in all)", n, gc.get_freeze_count())

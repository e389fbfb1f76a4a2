"""shared/heap.py: collections are timed into python_gc_pause_seconds, and a freeze collects
first (no garbage cycle is frozen) and then takes what survives out of later full collections."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from shared import heap
from shared.metrics import add_process_collectors


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """The test process must not keep what a test froze."""
    yield
    gc.unfreeze()


def _count(registry: CollectorRegistry, generation: str) -> float:
    value = registry.get_sample_value("python_gc_pause_seconds_count", {"generation": generation})
    assert value is not None
    return value


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_every_collection_is_timed_by_generation() -> None:
    registry = CollectorRegistry()
    add_process_collectors(registry)
    before = {g: _count(registry, g) for g in ("0", "1", "2")}
    gc.collect(0)
    gc.collect(2)
    gc.collect(2)
    assert _count(registry, "0") >= before["0"] + 1
    assert _count(registry, "2") == before["2"] + 2
    total = registry.get_sample_value("python_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and total > 0


def test_freeze_collects_garbage_cycles_and_freezes_what_lives(unfrozen: None) -> None:
    registry = CollectorRegistry()
    metrics = heap.GcMetrics(registry)
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    dead = weakref.ref(a)
    del a, b  # a garbage cycle: only a collection frees it
    alive = [_Node() for _ in range(1000)]
    n = heap.freeze(metrics)
    assert dead() is None, "a garbage cycle was frozen instead of collected"
    assert n >= len(alive)
    assert gc.get_freeze_count() >= len(alive)
    assert registry.get_sample_value("python_gc_frozen_objects_total") == n
    young_or_old = {id(o) for g in (0, 1, 2) for o in gc.get_objects(generation=g)}
    assert not any(id(x) in young_or_old for x in alive), "a survivor was left to collections"


def test_frozen_objects_are_still_freed_by_reference_counting(unfrozen: None) -> None:
    node = _Node()
    ref = weakref.ref(node)
    heap.freeze()
    before = gc.get_freeze_count()
    del node
    assert ref() is None
    assert gc.get_freeze_count() == before - 1


def test_a_second_registry_times_collections_too() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    add_process_collectors(first)
    add_process_collectors(second)
    b1, b2 = _count(first, "2"), _count(second, "2")
    gc.collect()
    assert (_count(first, "2"), _count(second, "2")) == (b1 + 1, b2 + 1)

"""Timing primitives shared by every benchmark: warm-up, repetitions, median and spread, CPU time
and peak RSS.

A measurement is a callable returning ``Sample(count, wall_s, cpu_s)``: how many units (messages
or rows) it processed, over how much wall time and how much CPU time of the measuring process
(``time.process_time``, or ``getrusage`` of a child for subprocess figures). ``repeat`` runs
it ``warmup`` times unmeasured, then ``reps`` times, and summarises the per-rep rates.

The machine is shared and noisy: medians over several reps, and every figure comes with its raw
limit measured in the same run, so ratios, not absolute numbers, are what the report compares.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "Sample",
    "Stat",
    "arepeat",
    "cpu_now",
    "peak_rss_bytes",
    "proc_cpu_s",
    "proc_rss_bytes",
    "repeat",
    "rss_bytes",
    "summarise",
]


@dataclass(frozen=True, slots=True)
class Sample:
    """One repetition: ``count`` units in ``wall_s`` seconds using ``cpu_s`` CPU seconds."""

    count: int
    wall_s: float
    cpu_s: float

    @property
    def rate(self) -> float:
        return self.count / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_per_m(self) -> float:
        """CPU seconds per million units (what sets the instance size)."""
        return self.cpu_s / self.count * 1e6 if self.count else 0.0


@dataclass(slots=True)
class Stat:
    """Summary of the per-rep rates: median, min/max and inter-quartile range, plus CPU."""

    median: float
    min: float
    max: float
    q1: float
    q3: float
    reps: int
    cpu_s_per_m: float  # median over reps
    rates: list[float] = field(default_factory=list)

    @property
    def spread_pct(self) -> float:
        """(max - min) / median in percent."""
        return (self.max - self.min) / self.median * 100 if self.median else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spread_pct"] = round(self.spread_pct, 1)
        return d


def summarise(samples: list[Sample]) -> Stat:
    rates = [s.rate for s in samples]
    if len(rates) >= 4:
        q = statistics.quantiles(rates, n=4)
        q1, q3 = q[0], q[2]
    else:
        q1, q3 = min(rates), max(rates)
    return Stat(
        median=statistics.median(rates),
        min=min(rates),
        max=max(rates),
        q1=q1,
        q3=q3,
        reps=len(rates),
        cpu_s_per_m=statistics.median(s.cpu_per_m for s in samples),
        rates=[round(r, 1) for r in rates],
    )


def cpu_now() -> float:
    return time.process_time()


#: A timed callable returning its unit count, or (untimed setup, timed callable).
Job = Callable[[], int] | tuple[Callable[[], None], Callable[[], int]]


def timed(job: Job) -> Sample:
    """Run ``job`` once (GC off, as timeit does) and time it; it returns the unit count."""
    if isinstance(job, tuple):
        setup, fn = job
        setup()
    else:
        fn = job
    gc_was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        n = fn()
        t1, c1 = time.perf_counter(), time.process_time()
    finally:
        if gc_was:
            gc.enable()
    return Sample(n, t1 - t0, c1 - c0)


def repeat(fn: Job, reps: int, warmup: int = 1) -> Stat:
    """Warm up ``warmup`` times, then summarise ``reps`` timed runs of ``fn``."""
    for _ in range(warmup):
        timed(fn)
    return summarise([timed(fn) for _ in range(reps)])


def interleave(fns: dict[str, Job], reps: int, warmup: int = 1) -> dict[str, Stat]:
    """Like ``repeat`` for several variants, alternating them rep by rep so that noise from
    other processes hits raw and ours alike (ratios stay fair on a shared machine)."""
    for _ in range(warmup):
        for fn in fns.values():
            timed(fn)
    samples: dict[str, list[Sample]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            samples[k].append(timed(fn))
    return {k: summarise(v) for k, v in samples.items()}


async def arepeat(fn: Callable[[], Awaitable[Sample]], reps: int, warmup: int = 1) -> Stat:
    """``repeat`` for coroutines that measure themselves (they know when the work is done)."""
    for _ in range(warmup):
        await fn()
    return summarise([await fn() for _ in range(reps)])


async def ainterleave(
    fns: dict[str, Callable[[], Awaitable[Sample]]], reps: int, warmup: int = 1
) -> dict[str, Stat]:
    """``interleave`` for self-measuring coroutines."""
    for _ in range(warmup):
        for fn in fns.values():
            await fn()
    samples: dict[str, list[Sample]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            samples[k].append(await fn())
    return {k: summarise(v) for k, v in samples.items()}


# -- memory ---------------------------------------------------------------------------------


def _status_field(pid: int | str, name: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    """Current resident set of this process."""
    return _status_field("self", "VmRSS:")


def peak_rss_bytes() -> int:
    """Peak resident set of this process (``ru_maxrss``; every benchmark runs in its own child
    process, so this is that benchmark's peak)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def proc_rss_bytes(pid: int, peak: bool = False) -> int:
    """Current (or peak, ``VmHWM``) resident set of another process, from /proc."""
    return _status_field(pid, "VmHWM:" if peak else "VmRSS:")


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of another process so far (/proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(parts[11]) + int(parts[12])) / tick

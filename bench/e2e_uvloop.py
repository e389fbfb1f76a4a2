"""gatherer end-to-end on uvloop: the e2e bench unchanged (its raw pipeline and the gatherer,
fed by the same simulator bursts), with uvloop's event loop instead of asyncio's default one.
Compared with the e2e rows of the same run it shows what the loop alone is worth, for the raw
limit and for the gatherer."""

from __future__ import annotations

from ._model import Context, Row
from .e2e import arun


def run(ctx: Context) -> list[Row]:
    import uvloop

    rows: list[Row] = uvloop.run(arun(ctx))
    for r in rows:
        r.name = r.name.replace("gatherer e2e:", "gatherer e2e on uvloop:")
        r.target = "(vs the e2e row: ≥ 20 % to adopt)"
        r.target_ratio = None
    return rows

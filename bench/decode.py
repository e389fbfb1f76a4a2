"""decode: router decode + validate + exact unit conversion + seq tracking vs orjson + row tuple.

Input: recorded orderbook_delta / trade frames (bench.frames), both profiles. Per rep a fresh
decoder (and a fresh router, fed the preamble of subscribe replies and snapshots untimed, so it
owns every book) then the stream is timed. Three figures, same frames, interleaved reps:

- raw: ``orjson.loads`` + building the row tuple from the parsed fields (no validation, no
  conversion): the floor of any Python decoder,
- ``Decoder.feed`` alone (shared/kalshi/decode.py),
- ``Router.route`` (decoder + ownership, occurrence, book apply, counters, writer offer) with
  writers that just accept the rows: what the gatherer does per frame before COPY.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from gatherer.router import Router
from shared.kalshi.decode import Decoder, ValueCache
from shared.metrics import GathererMetrics

from . import frames
from ._harness import Job, interleave, peak_rss_bytes
from ._model import Context, Row

RX = 1_780_000_000_000_000  # a fixed receive time: the clock read belongs to the I/O layer
_loads = orjson.loads


def raw_rows(stream: list[bytes]) -> int:
    """orjson + the row tuple a minimal pipeline would COPY (fields as they come)."""
    n = 0
    for raw in stream:
        o = _loads(raw)
        m = o["msg"]
        if o["type"] == "orderbook_delta":
            row: tuple[Any, ...] = (
                m["market_ticker"], m.get("ts_ms") or m.get("ts"), m["side"],
                m.get("price_dollars") or m.get("price"), m.get("delta_fp") or m.get("delta"),
                0, o["seq"], o["sid"], RX,
            )
        else:
            row = (
                m["trade_id"], m["market_ticker"], m.get("ts_ms") or m.get("ts"),
                m.get("yes_price_dollars") or m.get("yes_price"),
                m.get("no_price_dollars") or m.get("no_price"), m.get("count_fp") or m.get("count"),
                m["taker_side"], m.get("taker_outcome_side"), m.get("taker_book_side"),
                m.get("is_block_trade"), "ws", RX,
            )
        if row:
            n += 1
    return n


def decoder_run(stream: list[bytes]) -> Job:
    """A timed callable: a fresh Decoder (fresh value cache, like a fresh process), then every
    stream frame. No preamble needed: the first frame on an unannounced sid is the baseline."""
    state: dict[str, Decoder] = {}

    def setup() -> None:
        state["d"] = Decoder(cache=ValueCache())

    def run() -> int:
        feed = state["d"].feed
        n = 0
        for raw in stream:
            n += len(feed(raw, RX))
        return n

    return _with_setup(setup, run)


class _Accept:
    """A writer that accepts every row at once (the router's view of a writer with room)."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def offer(self, row: Any) -> bool:
        self.n += 1
        return True

    async def put(self, row: Any) -> None:
        self.n += 1


def make_router() -> tuple[Router, dict[str, _Accept]]:
    sinks = {t: _Accept() for t in ("trades", "orderbook_deltas", "orderbook_snapshots", "tickers")}
    router = Router(
        sinks, GathererMetrics(CollectorRegistry()), resync_q=asyncio.Queue(),
        backfill_q=asyncio.Queue(), lifecycle_q=asyncio.Queue(),
    )
    return router, sinks


def router_run(pre: list[bytes], stream: list[bytes], loop: asyncio.AbstractEventLoop
               ) -> Job:
    state: dict[str, Any] = {}

    async def setup_a() -> None:
        router, sinks = make_router()
        router.attach("c0", "orderbook")
        for raw in pre:
            await router.route("c0", raw, RX)
        state["r"], state["s"] = router, sinks

    async def run_a() -> int:
        route = state["r"].route
        for raw in stream:
            await route("c0", raw, RX)
        s = state["s"]
        return s["orderbook_deltas"].n + s["trades"].n

    return _with_setup(lambda: loop.run_until_complete(setup_a()),
                       lambda: loop.run_until_complete(run_a()))


def _with_setup(setup: Callable[[], None], run: Callable[[], int]) -> Job:
    return (setup, run)


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        for profile in frames.PROFILES:
            pre, stream = frames.load(ctx.frames, profile)
            fns: dict[str, Job] = {
                "raw": lambda s=stream: raw_rows(s),  # type: ignore[misc]
                "decoder": decoder_run(stream),
                "router": router_run(pre, stream, loop),
            }
            st = interleave(fns, ctx.reps, warmup=1)
            note = f"{len(stream)} frames (medium preset, seed {frames.SEED})"
            rows.append(Row("decode", f"decode {profile}: Decoder.feed", "msgs/s", st["raw"],
                            st["decoder"], "≥ 0.5 of raw", 0.5, peak_rss=peak_rss_bytes(), note=note))
            rows.append(Row("decode", f"decode {profile}: Router.route", "msgs/s", st["raw"],
                            st["router"], "(decode + routing)", None, peak_rss=peak_rss_bytes(),
                            note=note + "; adds ownership, occurrence, book apply, counters"))
    finally:
        loop.close()
    return rows

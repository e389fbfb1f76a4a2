"""stacks: the optional accelerators the hot path could use, each against today's stack in the
same run, raw limit beside raw limit so a ratio never hides a slower raw.

- **decode** (msgspec vs orjson): the decode bench's raw limit (JSON -> the row tuple a minimal
  pipeline would COPY) with ``orjson.loads`` + dict lookups against ``msgspec`` typed decoding
  into Structs + attribute reads, on the recorded frames of both profiles. ``Decoder.feed``
  (orjson) is timed beside them for scale.
- **receive** (picows vs websockets, and each under uvloop vs asyncio): a client in its own
  process receives the pre-framed blast (bench/simulator.py's raw server: recorded frames,
  aiohttp ``send_frame``) for a fixed window, decodes each frame with orjson and builds the row
  tuple (the receive half of the end-to-end raw pipeline). msgs/s and the client's CPU s per
  million; reps alternate the four clients.

The gatherer end to end under uvloop is the ``e2e_uvloop`` bench (the whole e2e bench, raw and
ours, on a uvloop loop). A stack is worth adopting when it gains >= 20 % end to end: the CPU it
saves per message here, divided by the gatherer's CPU per message end to end (the e2e row),
bounds that gain.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from . import frames
from ._harness import Job, Sample, interleave, peak_rss_bytes, summarise
from ._model import Context, Row
from .decode import RX, decoder_run, raw_rows
from .simulator import _blast_server

CLIENTS = ("websockets-asyncio", "websockets-uvloop", "picows-asyncio", "picows-uvloop")


def _msgspec_rows(stream: list[bytes]) -> Job:
    """msgspec's raw limit: typed decode (a tagged union of delta/trade frames) + the same row
    tuple ``raw_rows`` builds. Other frame types would fall back to orjson (none here)."""
    import msgspec

    # defstruct: this module postpones annotations, which msgspec cannot resolve for classes
    # local to a function
    opt_s, opt_i, opt_si = (str | None, None), (int | None, None), (str | int | None, None)
    delta_msg = msgspec.defstruct("DeltaMsg", [
        ("market_ticker", str), ("side", str), ("price_dollars", *opt_s), ("price", *opt_i),
        ("delta_fp", *opt_s), ("delta", *opt_i), ("ts_ms", *opt_i), ("ts", *opt_si)])
    trade_msg = msgspec.defstruct("TradeMsg", [
        ("trade_id", str), ("market_ticker", str), ("taker_side", *opt_s),
        ("yes_price_dollars", *opt_s), ("yes_price", *opt_i), ("no_price_dollars", *opt_s),
        ("no_price", *opt_i), ("count_fp", *opt_s), ("count", *opt_i),
        ("taker_outcome_side", *opt_s), ("taker_book_side", *opt_s),
        ("is_block_trade", bool | None, None), ("ts_ms", *opt_i), ("ts", *opt_si)])
    DeltaFrame = msgspec.defstruct("DeltaFrame", [("sid", int), ("seq", int),
                                                  ("msg", delta_msg)],
                                   tag_field="type", tag="orderbook_delta")
    TradeFrame = msgspec.defstruct("TradeFrame", [("sid", int), ("msg", trade_msg),
                                                  ("seq", *opt_i)], tag_field="type", tag="trade")
    decode = msgspec.json.Decoder(DeltaFrame | TradeFrame).decode

    def run() -> int:
        n = 0
        for raw in stream:
            o = decode(raw)
            m = o.msg
            if type(o) is DeltaFrame:
                row: tuple[Any, ...] = (
                    m.market_ticker, m.ts_ms or m.ts, m.side, m.price_dollars or m.price,  # type: ignore[union-attr]
                    m.delta_fp or m.delta, 0, o.seq, o.sid, RX)  # type: ignore[union-attr]
            else:
                row = (m.trade_id, m.market_ticker, m.ts_ms or m.ts,  # type: ignore[union-attr]
                       m.yes_price_dollars or m.yes_price, m.no_price_dollars or m.no_price,  # type: ignore[union-attr]
                       m.count_fp or m.count, m.taker_side, m.taker_outcome_side,  # type: ignore[union-attr]
                       m.taker_book_side, m.is_block_trade, "ws", RX)  # type: ignore[union-attr]
            if row:
                n += 1
        return n

    return run


async def _client(kind: str, url: str, warm: float, measure: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.stacks", kind, url, str(warm), str(measure),
        stdout=asyncio.subprocess.PIPE, cwd=str(Path(__file__).resolve().parents[1]))
    out, _ = await asyncio.wait_for(proc.communicate(), warm + measure + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} client exited {proc.returncode}")
    return json.loads(out)  # type: ignore[no-any-return]


async def _receive(ctx: Context, stream: list[bytes]) -> dict[str, list[Sample]]:
    runner, port = await _blast_server(stream)
    url = f"ws://127.0.0.1:{port}/ws"
    warm, measure = (1.0, 2.0) if ctx.quick else (1.0, 3.0)
    out: dict[str, list[Sample]] = {k: [] for k in CLIENTS}
    try:
        for rep in range(min(ctx.reps, 2) + 1):
            for kind in CLIENTS:
                r = await _client(kind, url, warm, measure)
                if rep:
                    out[kind].append(Sample(r["count"], r["wall_s"], r["cpu_s"]))
    finally:
        await runner.cleanup()
    return out


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for profile in frames.PROFILES:
        _, stream = frames.load(ctx.frames, profile)
        st = interleave({"orjson": lambda s=stream: raw_rows(s),  # type: ignore[misc]
                         "msgspec": _msgspec_rows(stream), "decoder": decoder_run(stream)},
                        ctx.reps, warmup=1)
        rows.append(Row("stacks", f"stacks decode {profile}: msgspec raw vs orjson raw",
                        "msgs/s", st["orjson"], st["msgspec"], "(alternative raw limit)", None,
                        peak_rss=peak_rss_bytes(),
                        extra={"decoder_feed_orjson": round(st["decoder"].median),
                               "decoder_cpu_s_per_m": round(st["decoder"].cpu_s_per_m, 2)},
                        note="raw = orjson.loads + row tuple; ours = msgspec typed decode + the "
                             "same row tuple"))
    _, stream = frames.load(ctx.frames, "fp2026")
    rec = asyncio.run(_receive(ctx, stream))
    base = summarise(rec["websockets-asyncio"])
    for kind in CLIENTS[1:]:
        rows.append(Row("stacks", f"stacks receive: {kind} vs websockets-asyncio", "msgs/s",
                        base, summarise(rec[kind]), "(alternative raw limit)", None,
                        peak_rss=peak_rss_bytes(),
                        note="client receive + orjson + row tuple of a pre-framed blast; "
                             "CPU s/M is the client process's"))
    return rows


# -- the client processes -------------------------------------------------------------------


async def _count(kind: str, url: str, warm: float, measure: float) -> dict[str, Any]:
    loads = orjson.loads
    state = {"n": 0, "counting": False}

    def on_frame(raw: bytes) -> None:
        o = loads(raw)
        m = o["msg"]
        row = (m.get("market_ticker"), m.get("ts_ms"), m.get("price_dollars"), o.get("seq"))
        if row and state["counting"]:
            state["n"] += 1

    if kind.startswith("picows"):
        from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

        class Listener(WSListener):  # type: ignore[misc]
            def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
                if frame.msg_type == WSMsgType.TEXT:
                    on_frame(frame.get_payload_as_bytes())

        transport, _ = await ws_connect(Listener, url, max_frame_size=1 << 20)

        async def close() -> None:
            transport.disconnect()
    else:
        from websockets.asyncio.client import connect

        ws = await connect(url, max_size=None, compression=None)

        async def reader() -> None:
            async for raw in ws:
                on_frame(raw)  # type: ignore[arg-type]

        task = asyncio.create_task(reader())

        async def close() -> None:
            task.cancel()
            await ws.close()

    await asyncio.sleep(warm)
    state["counting"] = True
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(measure)
    state["counting"] = False
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = state["n"]
    await close()
    return {"count": n, "wall_s": wall, "cpu_s": cpu}


def main() -> None:
    kind, url, warm, measure = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    coro = _count(kind, url, warm, measure)
    if kind.endswith("uvloop"):
        import uvloop

        result = uvloop.run(coro)
    else:
        result = asyncio.run(coro)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

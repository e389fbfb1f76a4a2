"""registry: the ``xl`` simulator's start time and RSS, then the gatherer's market registry loading
its 1,000,000 markets over REST from the live simulator (time, RSS after the load and at steady
state), and the same load replayed from memory (the registry's own cost).

Both run with the real ``RestClient`` and the default ``RegistryConfig`` (statuses open and
unopened). The simulator runs in its own process (``bench._simproc``) with REST token billing
off (``tier=None``: unlimited) and the gatherer's bucket raised out of the way: Kalshi's Basic
tier (20 reads/s) would spend ~50 s of quota alone on 1,000 pages of 1,000 markets, which is
an account limit, not a cost of either program. The sinks accept the reference rows without
keeping them (in the gatherer they go to bounded writer queues), so RSS is the registry's.
CPU seconds of both processes over the live load say which of them bounds it.
``--quick`` starts the ``large`` preset instead of ``xl``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry

from gatherer.config import KalshiConfig, RateLimitConfig, RegistryConfig
from gatherer.markets import MarketRegistry
from gatherer.rest import RestClient
from shared.kalshi.auth import load_private_key
from shared.metrics import GathererMetrics

from ._harness import peak_rss_bytes, proc_cpu_s, rss_bytes
from ._model import Context, Row
from ._simproc import SimProcess


class _Drop:
    """Accepts reference rows and forgets them."""

    n = 0

    def offer(self, row: Any) -> bool:
        self.n += 1
        return True

    async def put(self, row: Any) -> None:
        self.n += 1

    async def put_many(self, rows: Any) -> None:
        self.n += len(rows)


class Replay:
    """Serves the ``xl`` simulator's REST listings at memory speed: one recorded page of each
    listing, repeated with the page number spliced into every ticker (so all are distinct),
    ``n_markets / 1000`` market pages and ``n_events / 200`` event pages. The registry's own
    cost (HTTP client, JSON, conversion, indexing) is then what is timed."""

    def __init__(self, bodies: dict[str, dict[str, Any]], n_markets: int, n_events: int) -> None:
        self.series = orjson.dumps(bodies["series"])
        self.status = orjson.dumps(bodies["status"])
        self.markets = self._template(bodies["markets"], "markets")
        self.events = self._template(bodies["events"], "events")
        self.market_pages = n_markets // len(bodies["markets"]["markets"])
        self.event_pages = n_events // len(bodies["events"]["events"])

    @staticmethod
    def _template(body: dict[str, Any], key: str) -> bytes:
        return orjson.dumps({key: body[key], "cursor": "@@CURSOR@@"})

    def _page(self, tpl: bytes, k: int, pages: int, marker: bytes) -> bytes:
        out = tpl.replace(marker, marker + b"%04d" % k)
        return out.replace(b"@@CURSOR@@", b"" if k + 1 >= pages else b"%d" % (k + 1))

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        q = request.url.params
        k = int(q.get("cursor") or 0)
        if path.endswith("/markets"):
            if q.get("status") != "open":
                return httpx.Response(200, content=b'{"markets":[],"cursor":""}')
            body = self._page(self.markets, k, self.market_pages, b"-M")
        elif path.endswith("/events"):
            if q.get("status") != "open":
                return httpx.Response(200, content=b'{"events":[],"cursor":""}')
            body = self._page(self.events, k, self.event_pages, b"-E")
        elif path.endswith("/series"):
            body = self.series
        else:
            body = self.status
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})


TIER = "unlimited (simulator tier=None, gatherer bucket 10,000 reads/s)"


async def _load(rest: RestClient, metrics: GathererMetrics) -> tuple[MarketRegistry, dict[str, Any]]:
    sinks = _Drop(), _Drop(), _Drop()
    reg = MarketRegistry(RegistryConfig(), rest, metrics, markets_sink=sinks[0],
                         events_sink=sinks[1], series_sink=sinks[2],
                         now_us=lambda: time.time_ns() // 1000)
    gc.collect()
    rss0 = rss_bytes()
    t0, c0 = time.perf_counter(), time.process_time()
    await reg.full_sync()
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss_loaded = rss_bytes()
    gc.collect()
    await asyncio.sleep(0.5)
    rss_steady = rss_bytes()
    return reg, {"markets": len(reg), "load_s": round(took, 1), "cpu_s": round(cpu, 1),
                 "rss_mb_before": round(rss0 / 2**20), "rss_mb_loaded": round(rss_loaded / 2**20),
                 "rss_mb_steady": round(rss_steady / 2**20),
                 "registry_mb": round((rss_steady - rss0) / 2**20), "events": sinks[1].n}


async def arun(ctx: Context) -> list[Row]:
    preset = "large" if ctx.quick else "xl"
    workdir = Path(ctx.workdir) / "registry"
    sim = SimProcess(workdir, preset=preset, profile="fp2026", seed=2, clock_speed=1.0)
    sim.start(timeout=240)
    out: list[Row] = []
    try:
        start_s = sim.start_s
        sim_rss = sim.rss()
        out.append(Row("registry", f"simulator {preset}: start", "s", None, None,
                       "start in s, RSS in GB", ok=start_s < 60 and sim_rss < 4 << 30,
                       peak_rss=sim.rss(peak=True),
                       extra={"start_s": round(start_s, 2), "rss_mb": round(sim_rss / 2**20)},
                       note="process start to ready file (REST/WS/control listening)"))
        metrics = GathererMetrics(CollectorRegistry())
        kcfg = KalshiConfig(env="sim", rest_url=sim.rest_url, ws_url=sim.ws_url,
                            api_key_id=sim.key_id, request_timeout_s=60.0)
        key = load_private_key(Path(sim.key_file).read_bytes(), sim.key_id)
        rl = RateLimitConfig(read_per_s=100_000.0, read_capacity=100_000.0)  # tokens: out of the way
        # ---- live: the registry's full sync against the running simulator -------------------
        rest = RestClient(kcfg, key, rl, metrics)
        sim_cpu0 = proc_cpu_s(sim.pid)
        reg, live = await _load(rest, metrics)
        live["sim_cpu_s"] = round(proc_cpu_s(sim.pid) - sim_cpu0, 1)
        live["tier"] = TIER
        await rest.aclose()
        del reg
        gc.collect()
        ok = live["load_s"] < 60 and live["rss_mb_steady"] * 2**20 < 1.5 * 2**30
        out.append(Row("registry", f"registry: load {live['markets']:,} markets (live {preset} "
                       "simulator)", "s", None, None, "< 1.5 GB, < 60 s", ok=ok,
                       peak_rss=peak_rss_bytes(), extra=live,
                       note=f"default RegistryConfig (statuses open + unopened); REST {TIER}; "
                            "cpu_s = the gatherer's, sim_cpu_s = the simulator's over the load"))
        rest = RestClient(kcfg, key, rl, metrics)
        # the simulator alone: sequential pages to one client (and one page recorded for replay)
        t0 = time.perf_counter()
        pages = 0
        bodies: dict[str, dict[str, Any]] = {
            "series": await rest.get("/series"), "status": await rest.exchange_status(),
            "events": await rest.get("/events", {"status": "open", "limit": 200})}
        # as the registry asks (mve_filter=exclude): a multivariate ticker has no -M number to
        # splice, so a recorded page of them would replay as the same 1,000 markets every time
        async for page in rest.paginate("/markets", {"status": "open", "mve_filter": "exclude"},
                                        "markets", limit=1000):
            if pages == 0:
                bodies["markets"] = {"markets": page}
            pages += 1
            if pages >= (5 if ctx.quick else 10):
                break
        sim_rate = pages * 1000 / (time.perf_counter() - t0)
        await rest.aclose()
        n_markets = 200_000 if ctx.quick else 1_000_000
        replay = Replay(bodies, n_markets, 100_000)
        rest = RestClient(kcfg, key, rl, metrics, transport=httpx.MockTransport(replay.handle))
        _, ex = await _load(rest, metrics)
        await rest.aclose()
        out.append(Row("registry", f"registry: load {ex['markets']:,} markets (replayed {preset} pages)",
                       "s", None, None, "(where time goes)", None, peak_rss=peak_rss_bytes(),
                       extra={**ex, "sim_rest_markets_per_s": round(sim_rate)},
                       note=f"full_sync through RestClient on an in-memory transport: the "
                            f"registry's own cost; the live {preset} simulator alone serves "
                            f"~{sim_rate:.0f} markets/s (one client, sequential pages)"))
    finally:
        sim.stop()
    return out


def run(ctx: Context) -> list[Row]:
    return asyncio.run(arun(ctx))

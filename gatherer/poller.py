"""REST orderbook snapshot poller: a backstop for the WebSocket books.

Every ``poller.interval_s`` it fetches the REST book of every open market with the batch endpoint
(``GET /markets/orderbooks?tickers=...``). Kalshi bills that endpoint per ticker (10 tokens each)
and refuses a request costing more than the key's bucket holds, so a batch is
``min(poller.batch_size, what the Read bucket can pay for)`` tickers: 18 on a Basic key (200
tokens, 90% headroom). Requests queue at the lowest priority of the REST budget, behind the
registry and trade backfill, so a long cycle never starves them. A book that changed since the
last poll is stored as a snapshot with source ``'rest'``; a book that differs from the router's
WS-reconstructed one is counted (``poller_book_mismatches_total``) and handed to the resync
machine, which records the ``book_mismatch`` window (from the last moment the book was known good:
deltas were lost somewhere in it) and the resync. A book that matches moves that "known good"
moment forward. (The REST book can lag the WS book slightly, so an occasional mismatch on a busy
market is expected and harmless: it costs one fresh snapshot and a conservative loss window.)

NO-side convention: Kalshi's ``use_yes_price`` (WS orderbook) reports the NO side on the YES
price scale, and is to become the default and then disappear; we ask for NO prices explicitly,
but a server that stops honouring that would change the WS convention silently. A WS book whose
NO side is exactly the REST NO side mirrored (1 - price) is that, and is counted in
``poller_no_side_convention_mismatches_total`` (alert ``NoSideConventionMismatch``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence

from gatherer._types import NowUs, RowSink
from gatherer.config import PollerConfig
from gatherer.errors import RestError
from gatherer.markets import MarketRegistry
from gatherer.rest import RestClient
from gatherer.router import Router
from shared.kalshi.models import Rejected, SnapshotRow
from shared.kalshi.objects import snapshot_from_rest
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.poller")

ResyncFn = Callable[[str, str], Awaitable[bool]]


def _digest(snap: SnapshotRow) -> int:
    """Cheap content fingerprint (crc32 of the levels) to store only books that changed."""
    return zlib.crc32(repr((snap.yes_levels, snap.no_levels)).encode())


class SnapshotPoller:
    def __init__(
        self,
        cfg: PollerConfig,
        rest: RestClient,
        registry: MarketRegistry,
        router: Router,
        snapshots: RowSink,
        metrics: GathererMetrics,
        *,
        now_us: NowUs,
    ) -> None:
        self._cfg = cfg
        self._rest = rest
        self._registry = registry
        self._router = router
        self._snapshots = snapshots
        self._m = metrics
        self._now = now_us
        self._last: dict[str, int] = {}  # ticker -> digest of the last stored REST book
        self._rl = RateLimitedLog(log, 60.0)
        self.last_cycle_s: float | None = None
        self.last_cycle_end: float | None = None  # monotonic
        self.cycles = 0

    def batch_size(self) -> int:
        """Tickers per request: the configured size, lowered to what the budget can pay for."""
        return min(self._cfg.batch_size, self._rest.max_batch("/markets/orderbooks"))

    async def poll(self, tickers: Sequence[str]) -> int:
        """Fetch and process the REST books of ``tickers``; returns how many were fetched."""
        n = 0
        size = self.batch_size()
        for i in range(0, len(tickers), size):
            batch = list(tickers[i:i + size])
            try:
                books = await self._rest.orderbooks(batch)
            except RestError as exc:
                self._m.poller_fetch_errors_total.inc()
                self._rl.log(logging.WARNING, "fetch", "orderbook batch of %d failed: %s", len(batch), exc)
                continue
            rx = self._now()
            for ob in books:
                ticker = ob.get("ticker") if isinstance(ob, dict) else None
                if not isinstance(ticker, str):
                    self._m.poller_fetch_errors_total.inc()
                    continue
                snap = snapshot_from_rest(ob, ticker, rx)
                if isinstance(snap, Rejected):
                    self._m.poller_fetch_errors_total.inc()
                    self._m.router_parse_errors_total.labels(reason=snap.reason).inc()
                    continue
                n += 1
                self._m.poller_snapshots_fetched_total.inc()
                await self.process(snap)
        return n

    async def process(self, snap: SnapshotRow) -> bool:
        """Store if changed; compare with the WS book. Returns True on a mismatch."""
        d = _digest(snap)
        if self._last.get(snap.ticker) != d:
            self._last[snap.ticker] = d
            await self._snapshots.put_many([snap])
        diff = self._router.compare(snap)
        if not diff:
            return False
        self._m.poller_book_mismatches_total.inc()
        self._check_no_convention(snap)
        self._rl.log(logging.WARNING, "mismatch", "REST book of %s differs from the WS book at %d "
                     "levels; resyncing", snap.ticker, len(diff.levels), ticker=snap.ticker)
        await self._router.request_resync(snap.ticker, "book_mismatch")
        return True

    def _check_no_convention(self, snap: SnapshotRow) -> None:
        book = self._router.book(snap.ticker)
        if book is None or not book.no:
            return
        rest_no = {p: q for p, q in snap.no_levels if q > 0}
        mirrored = {10_000 - p: q for p, q in book.no.items()}
        if rest_no and mirrored == rest_no and book.no != rest_no:
            self._m.poller_no_side_convention_mismatches_total.inc()
            self._rl.log(logging.ERROR, "no_convention", "the WebSocket reports %s's NO side on "
                         "the YES price scale (REST NO prices mirrored): Kalshi no longer honours "
                         "use_yes_price=false; NO-side deltas are stored on the wrong scale",
                         snap.ticker, ticker=snap.ticker)

    async def cycle(self) -> int:
        t0 = time.monotonic()
        tickers = self._registry.open_tickers()
        # forget markets that closed, so the digest map stays bounded by the open set
        if len(self._last) > 2 * max(1, len(tickers)):
            keep = set(tickers)
            self._last = {t: d for t, d in self._last.items() if t in keep}
        need_s = len(tickers) * self._rest.cost("/markets/orderbooks") / self._rest.read_bucket.rate
        if need_s > self._cfg.interval_s:
            self._rl.log(logging.WARNING, "budget", "polling %d markets needs ~%.0f s of this key's "
                         "REST budget, more than poller.interval_s (%.0f s): cycles run back to "
                         "back (README \"Kalshi's limits\": a higher tier or a longer interval)",
                         len(tickers), need_s, self._cfg.interval_s, markets=len(tickers))
        n = await self.poll(tickers)
        dt = time.monotonic() - t0
        self.last_cycle_s = dt
        self.last_cycle_end = time.monotonic()
        self.cycles += 1
        self._m.poller_markets_polled.set(n)
        self._m.poller_poll_duration_seconds.observe(dt)
        log.info("poll cycle: %d markets in %.1f s", n, dt, extra={"markets": n})
        return n

    async def run(self) -> None:
        while True:
            await self.cycle()
            await asyncio.sleep(self._cfg.interval_s)

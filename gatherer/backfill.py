"""Trade backfill over REST: makes the trades table complete even when a socket was down.

Requests (``router.BackfillRequest`` on one queue) come from:
- start-up: since the newest stored trade (minus overlap), at most ``backfill.max_window_s``;
- every reconnect of a trade connection (its outage window) and every trade-channel seq gap;
- the admin API (one market);
- a sweep every ``backfill.sweep_interval_s`` of the all-markets feed over the last interval.

Windows are measured on our receive clock and converted to exchange time
(``_exclock.ExchangeClock``), widened by ``overlap_s`` on each side, and queried with
``RestClient.trades`` (``min_ts``/``max_ts`` in seconds), which reads ``/markets/trades`` and, for
the part older than Kalshi's historical cutoff, ``/historical/trades``. Rows go to the trades
writer, whose SQL is idempotent by ``trade_id`` (hardening 1), so overlap never duplicates. Each
backfill is a ``trade_backfill`` coverage event, recovered when done (its detail names the tiers
that answered); a tier the window needed failing leaves it unrecovered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from gatherer._exclock import ExchangeClock
from gatherer._types import NowUs, RowSink
from gatherer.config import BackfillConfig
from gatherer.coverage import CoverageLedger
from gatherer.errors import RestError
from gatherer.rest import RestClient
from gatherer.router import BackfillRequest
from shared.kalshi.models import Rejected, TradeRow
from shared.kalshi.objects import trade_from_rest
from shared.logging import RateLimitedLog
from shared.metrics import GathererMetrics

log = logging.getLogger("gatherer.backfill")

#: Above this many markets one all-markets query is cheaper than one query per market.
PER_MARKET_MAX = 20


class Backfill:
    """Consumes backfill requests and runs the periodic sweep."""

    def __init__(
        self,
        cfg: BackfillConfig,
        rest: RestClient,
        trades: RowSink,
        coverage: CoverageLedger,
        metrics: GathererMetrics,
        *,
        requests: asyncio.Queue[BackfillRequest],
        exclock: ExchangeClock,
        now_us: NowUs,
    ) -> None:
        self._cfg = cfg
        self._rest = rest
        self._trades = trades
        self._coverage = coverage
        self._m = metrics
        self.requests = requests
        self._ex = exclock
        self._now = now_us
        self._rl = RateLimitedLog(log, 60.0)
        self.last_done_us: int | None = None
        self.in_progress = 0

    async def run(self, window_us: int, reason: str, *, tickers: Sequence[str] | None = None,
                  end_us: int | None = None) -> int:
        """Backfill trades received in [window_us, end_us or now] (our clock); returns rows fetched."""
        end = self._now() if end_us is None else end_us
        start = max(window_us, end - int(self._cfg.max_window_s * 1e6))
        self._m.backfill_requests_total.labels(reason=reason).inc()
        ov = self._cfg.overlap_s
        min_ts = int(self._ex.to_exchange(start) // 1_000_000 - ov)
        max_ts = int(-(-self._ex.to_exchange(end) // 1_000_000) + ov)
        scope = "market" if tickers is not None and len(tickers) == 1 else "process"
        ticker = tickers[0] if scope == "market" and tickers else None
        eid = await self._coverage.open("trade_backfill", scope, start, ticker=ticker,
                                        detail={"reason": reason, "min_ts": min_ts, "max_ts": max_ts,
                                                "markets": None if tickers is None else len(tickers)})
        self.in_progress += 1
        t0 = time.monotonic()
        n = 0
        ok = True
        sources: set[str] = set()
        try:
            if tickers is not None and len(tickers) <= PER_MARKET_MAX:
                for t in tickers:
                    n += await self._fetch(min_ts, max_ts, t, sources)
            else:
                n = await self._fetch(min_ts, max_ts, None, sources)
        except RestError as exc:
            ok = False
            self._rl.log(logging.ERROR, f"fail:{reason}", "trade backfill (%s) failed: %s; the next "
                         "sweep retries the window", reason, exc, reason=reason)
        finally:
            self.in_progress -= 1
        await self._coverage.close(eid, window_end=end, recovered=ok,
                                   detail={"trades": n, "seconds": round(time.monotonic() - t0, 3),
                                           "sources": sorted(sources)})
        if ok:
            self.last_done_us = self._now()
        log.info("trade backfill (%s): %d trades in %.2f s", reason, n, time.monotonic() - t0,
                 extra={"reason": reason, "trades": n, "ticker": ticker})
        return n

    async def run_exchange_window(self, ticker: str, min_ts: int, max_ts: int,
                                  reason: str) -> tuple[int, bool]:
        """Backfill ``ticker``'s trades created in [min_ts, max_ts] (Unix seconds, exchange
        clock, as the caller read them on Kalshi); returns (rows fetched, succeeded). For a
        window someone else found incomplete (``kalshi-data reconcile``), so it is not clamped
        to ``max_window_s`` nor moved by the receive clock."""
        self._m.backfill_requests_total.labels(reason=reason).inc()
        start, end = min_ts * 1_000_000, (max_ts + 1) * 1_000_000
        eid = await self._coverage.open("trade_backfill", "market", start, ticker=ticker,
                                        detail={"reason": reason, "min_ts": min_ts, "max_ts": max_ts})
        t0 = time.monotonic()
        sources: set[str] = set()
        n, ok = 0, True
        self.in_progress += 1
        try:
            n = await self._fetch(min_ts, max_ts, ticker, sources)
        except RestError as exc:
            ok = False
            log.error("trade backfill (%s) of %s failed: %s", reason, ticker, exc,
                      extra={"reason": reason, "ticker": ticker})
        finally:
            self.in_progress -= 1
        await self._coverage.close(eid, window_end=end, recovered=ok,
                                   detail={"trades": n, "seconds": round(time.monotonic() - t0, 3),
                                           "sources": sorted(sources)})
        log.info("trade backfill (%s) of %s: %d trades", reason, ticker, n,
                 extra={"reason": reason, "trades": n, "ticker": ticker})
        return n, ok

    async def _fetch(self, min_ts: int, max_ts: int, ticker: str | None, sources: set[str]) -> int:
        n = 0
        query = self._rest.trades(ticker=ticker, min_ts=min_ts, max_ts=max_ts,
                                  limit=self._cfg.page_limit)
        async for page in query:
            rx = self._now()
            rows: list[TradeRow] = []
            for obj in page:
                row = trade_from_rest(obj, rx)
                if isinstance(row, Rejected):
                    self._m.router_parse_errors_total.labels(reason=row.reason).inc()
                    self._rl.log(logging.WARNING, f"bad_trade:{row.reason}", "REST trade rejected: "
                                 "%s %s", row.reason, row.detail)
                    continue
                rows.append(row)
            if rows:
                await self._trades.put_many(rows)
                self._m.backfill_trades_total.inc(len(rows))
                n += len(rows)
        sources |= query.sources
        return n

    async def run_requests(self) -> None:
        """Serve the request queue forever; adjacent requests are merged into one window."""
        while True:
            req = await self.requests.get()
            start, end, reasons, tickers = req.start_us, req.end_us, {req.reason}, req.tickers
            while not self.requests.empty():
                nxt = self.requests.get_nowait()
                if (nxt.tickers is None) != (tickers is None):
                    self.requests.put_nowait(nxt)  # do it next round
                    break
                start, end = min(start, nxt.start_us), max(end, nxt.end_us)
                reasons.add(nxt.reason)
                if tickers is not None and nxt.tickers is not None:
                    tickers = tuple(sorted(set(tickers) | set(nxt.tickers)))
            await self.run(start, "+".join(sorted(reasons)), tickers=tickers, end_us=end)

    async def run_sweep(self) -> None:
        """Every sweep interval: the all-markets feed over the last interval (+ overlap)."""
        while True:
            await asyncio.sleep(self._cfg.sweep_interval_s)
            now = self._now()
            await self.run(now - int(self._cfg.sweep_interval_s * 1e6), "sweep", end_us=now)

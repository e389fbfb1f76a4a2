"""Fan-out of engine events to WebSocket subscriptions, with seq and frame faults applied.

Each event's ``msg`` body is encoded once; each subscriber then gets one bytes ``%`` format for
its ``sid``/``seq`` envelope. Subscriptions are indexed by channel and ticker so an event costs
only as much as its audience.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import SimConfig
from .encode import Encoder, frame, noseq_template, seq_template
from .engine import Delta, Engine, Event, EventLifecycle, Lifecycle, Ticker, Trade
from .faults import Faults
from .session import Session, Sub, error_frame
from .truth import Truth

if TYPE_CHECKING:
    from collections.abc import Callable


class Hub:
    """All live sessions and their subscriptions; implements :class:`FaultTarget`."""

    def __init__(self, conf: SimConfig, engine: Engine, encoder: Encoder, truth: Truth,
                 faults: Faults) -> None:
        self.conf = conf
        self.engine = engine
        self.enc = encoder
        self.truth = truth
        self.faults = faults
        faults.target = self
        self.sessions: set[Session] = set()
        self.dropper: Callable[[Session, str, int, str], None] | None = None  # set by ws.py
        self.by_ticker: dict[str, dict[str, set[Sub]]] = {
            c: {} for c in ("orderbook_delta", "ticker", "trade")}
        self.all_markets: dict[str, set[Sub]] = {"ticker": set(), "trade": set(),
                                                 "market_lifecycle_v2": set()}
        self._seq_tpl: dict[str, bytes] = {}
        self._noseq_tpl: dict[str, bytes] = {}
        self.delta_n = 0
        self.trade_n = 0
        self.frames = 0

    # --- lookups --------------------------------------------------------------------------
    def market_index(self, ticker: str) -> int | None:
        return self.engine.catalog.parse_market(ticker)

    def market_id(self, ticker: str) -> str:
        i = self.market_index(ticker)
        if i is None:
            return ""
        s = self.engine.states.get(i)
        return s.st.market_id if s is not None else self.engine.catalog.static(i).market_id

    # --- subscriptions --------------------------------------------------------------------
    def add_sub(self, sub: Sub) -> None:
        idx = self.by_ticker.get(sub.channel)
        if sub.tickers is None:
            if sub.channel in self.all_markets:
                self.all_markets[sub.channel].add(sub)
        elif idx is not None:
            for t in sub.tickers:
                idx.setdefault(t, set()).add(sub)

    def remove_sub(self, sub: Sub) -> None:
        if sub.channel in self.all_markets:
            self.all_markets[sub.channel].discard(sub)
        idx = self.by_ticker.get(sub.channel)
        if idx is not None and sub.tickers:
            for t in sub.tickers:
                s = idx.get(t)
                if s is not None:
                    s.discard(sub)
                    if not s:
                        del idx[t]

    # --- delivery -------------------------------------------------------------------------
    def deliver(self, sub: Sub, type_: str, body: bytes, id_: int | None = None) -> None:
        # Hot path: one call per frame per subscriber; keep lookups few.
        if not sub.alive:
            return
        sess = sub.session
        if len(sess.out) >= self.conf.ws_max_buffer:
            self._terminate(sub, 25)
            self.faults.count("error_25_overflow")
            return
        self.frames += 1
        if not sub.has_seq:
            if id_:
                sess.push(frame(type_, sub.sid, None, body, id_))
                return
            tpl = self._noseq_tpl.get(type_)
            if tpl is None:
                tpl = self._noseq_tpl[type_] = noseq_template(type_)
            sess.push(tpl % (sub.sid, body))
            return
        f = self.faults
        sub.seq += 1
        if not f.seq_armed and not id_:
            tpl = self._seq_tpl.get(type_)
            if tpl is None:
                tpl = self._seq_tpl[type_] = seq_template(type_)
            sess.push(tpl % (sub.sid, sub.seq, body))
            return
        if f.pending["skip_seq"] and f.take("skip_seq", sub.channel, sess.key_id):
            sub.seq += 1
        data = frame(type_, sub.sid, sub.seq, body, id_)
        if f.pending["duplicate_seq"] and f.take("duplicate_seq", sub.channel, sess.key_id):
            sess.push(data)
            sess.push(data)
            return
        if (f.pending["reorder_seq"] and sess.held is None
                and f.take("reorder_seq", sub.channel, sess.key_id)):
            sess.held = data
            return
        sess.push(data)

    def send_snapshot(self, sub: Sub, ticker: str, id_: int | None) -> None:
        i = self.market_index(ticker)
        if i is None:
            return
        s = self.engine.view(i)
        body = self.enc.snapshot_body(ticker, s.st.market_id, s.yes, s.no)
        self.deliver(sub, "orderbook_snapshot", body, id_)

    def send_ticker(self, sub: Sub, ticker: str) -> None:
        i = self.market_index(ticker)
        if i is None:
            return
        s = self.engine.view(i)
        tk = self.engine.ticker_of(s, self.engine.now_ms * 1000)
        self.deliver(sub, "ticker", self.enc.ticker_body(tk, s.st.market_id))

    def publish(self, events: list[Event]) -> None:
        """Send engine events (already appended to the truth log) to their subscribers."""
        enc = self.enc
        states = self.engine.states
        f = self.faults
        ob = self.by_ticker["orderbook_delta"]
        tk_idx = self.by_ticker["ticker"]
        tr_idx = self.by_ticker["trade"]
        tk_all = self.all_markets["ticker"]
        tr_all = self.all_markets["trade"]
        lc_all = self.all_markets["market_lifecycle_v2"]
        for ev in events:
            t = type(ev)
            if t is Delta:
                n = self.delta_n
                self.delta_n += 1
                subs = ob.get(ev.ticker)  # type: ignore[union-attr]
                if f.withholds:
                    if f.check_withhold("delta", ev.ticker):  # type: ignore[union-attr]
                        self.truth.mark_withheld("delta", n)
                        continue
                    if f.check_withhold("drop_delta", ev.ticker):  # type: ignore[union-attr]
                        # lost on the wire: every subscriber's seq moves on, nothing is sent
                        self.truth.mark_dropped("delta", n)
                        for sub in tuple(subs or ()):
                            if sub.alive and sub.has_seq:
                                sub.seq += 1
                        continue
                if subs:
                    body = enc.delta_body(ev, states[ev.idx].st.market_id)  # type: ignore[union-attr,arg-type]
                    for sub in tuple(subs):
                        self.deliver(sub, "orderbook_delta", body)
            elif t is Trade:
                n = self.trade_n
                self.trade_n += 1
                if f.withholds and f.check_withhold("trade", ev.ticker):  # type: ignore[union-attr]
                    self.truth.mark_withheld("trade", n, ev.trade_id)  # type: ignore[union-attr]
                    continue
                subs = tr_idx.get(ev.ticker)  # type: ignore[union-attr]
                if tr_all or subs:
                    body = enc.trade_body(ev)  # type: ignore[arg-type]
                    for sub in tuple(tr_all):
                        self.deliver(sub, "trade", body)
                    if subs:
                        for sub in tuple(subs):
                            self.deliver(sub, "trade", body)
            elif t is Ticker:
                subs = tk_idx.get(ev.ticker)  # type: ignore[union-attr]
                if tk_all or subs:
                    body = enc.ticker_body(ev, states[ev.idx].st.market_id)  # type: ignore[union-attr,arg-type]
                    for sub in tuple(tk_all):
                        self.deliver(sub, "ticker", body)
                    if subs:
                        for sub in tuple(subs):
                            self.deliver(sub, "ticker", body)
            elif t is Lifecycle:
                if lc_all:
                    body = enc.lifecycle_body(ev, states[ev.idx].st)  # type: ignore[union-attr,arg-type]
                    for sub in tuple(lc_all):
                        self.deliver(sub, "market_lifecycle_v2", body)
            elif t is EventLifecycle and lc_all:
                body = enc.event_lifecycle_body(ev)  # type: ignore[arg-type]
                for sub in tuple(lc_all):
                    self.deliver(sub, "event_lifecycle", body)

    # --- FaultTarget ----------------------------------------------------------------------
    def _terminate(self, sub: Sub, code: int) -> None:
        sess = sub.session
        if sess.subs.pop(sub.sid, None) is None:
            return
        sub.alive = False
        self.remove_sub(sub)
        # The error frame goes out even when the buffer is full (it is the last word).
        sess.out.append((error_frame(None, code, sub.sid), False))
        sess.notify()

    def terminate_sids(self, code: int, sid: int | None, channel: str | None) -> int:
        n = 0
        for sess in list(self.sessions):
            for sub in list(sess.subs.values()):
                if (sid is None or sub.sid == sid) and (channel is None or sub.channel == channel):
                    self._terminate(sub, code)
                    n += 1
        return n

    def reset_seqs(self) -> int:
        n = 0
        for sess in self.sessions:
            for sub in sess.subs.values():
                if sub.has_seq:
                    sub.seq = 0
                    n += 1
        return n

    def drop_all(self, mode: str, code: int, reason: str, key_id: str | None = None) -> int:
        n = 0
        for sess in list(self.sessions):
            if key_id is not None and getattr(sess, "key_id", None) != key_id:
                continue
            if self.dropper is not None:
                self.dropper(sess, mode, code, reason)
                n += 1
        return n

    def inject_all(self, data: bytes, binary: bool) -> int:
        for sess in self.sessions:
            sess.push(data, binary)
        return len(self.sessions)

    def stats(self) -> dict[str, int]:
        return {"connections": len(self.sessions), "frames": self.frames,
                "subscriptions": sum(len(s.subs) for s in self.sessions)}


"""Fan-out of engine events to WebSocket subscriptions, with seq and frame faults applied.

Each event's ``msg`` body is encoded once; each subscriber then gets one bytes ``%`` format for
its ``sid``/``seq`` envelope. Subscriptions are indexed by channel and ticker so an event costs
only as much as its audience.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .catalog import ONE_DOLLAR
from .config import SimConfig
from .encode import Encoder, frame, noseq_template, seq_template
from .engine import Delta, Engine, Event, EventLifecycle, Lifecycle, Ticker, Trade
from .faults import Faults
from .session import Session, Sub, error_frame
from .truth import Truth

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

Templates = tuple[str, bytes, bytes]  # message type, frame template with seq, without seq


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
        self._tpl: dict[str, Templates] = {}
        self.delta_n = 0
        self.trade_n = 0
        self.frames = 0

    # --- lookups --------------------------------------------------------------------------
    def market_index(self, ticker: str) -> int | None:
        return self.engine.catalog.parse_market(ticker)

    def is_mve(self, ticker: str) -> bool:
        return self.engine.catalog.parse_mve(ticker) is not None

    def market_status(self, i: int) -> str:
        s = self.engine.states.get(i)
        if s is not None:
            return self.engine.status_of(s)
        st = self.engine.catalog.static(i)
        now = self.engine.now_ms
        return "initialized" if now < st.open_ms else ("closed" if now >= st.close_ms else "active")

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
    def templates(self, type_: str) -> Templates:
        """Frame templates of a message type, built once."""
        t = self._tpl.get(type_)
        if t is None:
            t = self._tpl[type_] = (type_, seq_template(type_), noseq_template(type_))
        return t

    def _overflow(self, sub: Sub) -> None:
        """The subscriber's queue hit ``ws_max_buffer``: end the subscription with error 25."""
        self._terminate(sub, 25)
        self.faults.count("error_25_overflow")

    def fan_out(self, subs: Iterable[Sub], tpl: Templates, body: bytes) -> None:
        """One event body to every subscriber in ``subs``, with no seq fault pending.

        The per-frame hot path, kept to a template format and a queue append per frame. The
        writer is woken only when a queue goes from empty to non-empty: with frames already
        queued it is either awake or draining them, and loops until the queue is empty.
        """
        _, seq_tpl, noseq_tpl = tpl
        limit = self.conf.ws_max_buffer
        faults = self.faults
        n = 0
        for sub in tuple(subs):  # a copy: error 25 removes the sub from its index
            if not sub.alive:
                continue
            sess = sub.session
            if faults.muted and faults.is_muted(sub.channel, sess.key_id):
                continue
            out = sess.out
            if len(out) >= limit:
                self._overflow(sub)
                continue
            if not out:
                sess.notify()
            if sub.has_seq:
                sub.seq += 1
                out.append(seq_tpl % (sub.sid, sub.seq, body))
            else:
                out.append(noseq_tpl % (sub.sid, body))
            if sess.held is not None:  # a reordered frame goes out right behind this one
                out.append(sess.held)
                sess.held = None
            n += 1
        self.frames += n

    def _fan_each(self, subs: Iterable[Sub], tpl: Templates, body: bytes) -> None:
        """:meth:`fan_out` through :meth:`deliver`, for when a seq fault is pending."""
        for sub in tuple(subs):
            self.deliver(sub, tpl[0], body)

    def deliver(self, sub: Sub, type_: str, body: bytes, id_: int | None = None) -> None:
        """One frame to one subscriber; the general path (command ``id``, seq faults)."""
        f = self.faults
        if not id_ and not f.seq_armed and not f.muted:
            self.fan_out((sub,), self.templates(type_), body)
            return
        if not sub.alive:
            return
        sess = sub.session
        if self.faults.muted and self.faults.is_muted(sub.channel, sess.key_id):
            return
        if len(sess.out) >= self.conf.ws_max_buffer:
            self._overflow(sub)
            return
        self.frames += 1
        if not sub.has_seq:
            if id_:
                sess.push(frame(type_, sub.sid, None, body, id_))
            else:
                sess.push(self.templates(type_)[2] % (sub.sid, body))
            return
        sub.seq += 1
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
        no = {ONE_DOLLAR - p: c for p, c in s.no.items()} if sub.yes_scale else s.no
        body = self.enc.snapshot_body(ticker, s.st.market_id, s.yes, no)
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
        # Nothing arms a seq fault during this synchronous call (faults arrive through the
        # loop); one consumed mid-batch only sends the rest through the general path.
        # (a muted channel goes through deliver too: fan_out does not look at mutes)
        fan = self._fan_each if f.seq_armed or f.muted else self.fan_out
        ob = self.by_ticker["orderbook_delta"]
        tk_idx = self.by_ticker["ticker"]
        tr_idx = self.by_ticker["trade"]
        tk_all = self.all_markets["ticker"]
        tr_all = self.all_markets["trade"]
        lc_all = self.all_markets["market_lifecycle_v2"]
        delta_t = self.templates("orderbook_delta")
        trade_t = self.templates("trade")
        ticker_t = self.templates("ticker")
        no_ts_per_m = int(self.conf.delta_no_ts_share * 1_000_000)
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
                        # (as fan_out/deliver: a muted subscriber is sent nothing and its
                        # seq stays put)
                        for sub in tuple(subs or ()):
                            if sub.alive and sub.has_seq and not (
                                    f.muted and f.is_muted(sub.channel, sub.session.key_id)):
                                sub.seq += 1
                        continue
                if subs:
                    mid = states[ev.idx].st.market_id  # type: ignore[union-attr]
                    # knob delta_no_ts_share: a deterministic share of deltas carry no ts/ts_ms
                    no_ts = bool(no_ts_per_m) and (n * 2_654_435_761) % 1_000_000 < no_ts_per_m
                    if no_ts:
                        f.count("delta_no_ts")
                    body = enc.delta_body(ev, mid, no_ts)  # type: ignore[arg-type]
                    if ev.side == "no" and any(s.yes_scale for s in subs):  # type: ignore[union-attr]
                        # use_yes_price subscribers get the NO price on the YES scale
                        body_y = enc.delta_body(
                            ev._replace(price=ONE_DOLLAR - ev.price), mid, no_ts)  # type: ignore[union-attr,arg-type]
                        fan([s for s in subs if not s.yes_scale], delta_t, body)
                        fan([s for s in subs if s.yes_scale], delta_t, body_y)
                    else:
                        fan(subs, delta_t, body)
            elif t is Trade:
                n = self.trade_n
                self.trade_n += 1
                if f.withholds and (w := f.check_withhold("trade", ev.ticker)):  # type: ignore[union-attr]
                    self.truth.mark_withheld("trade", n, ev.trade_id)  # type: ignore[union-attr]
                    if w.rest_lag_s:
                        f.lag_on_rest(n, ev.ts_us, w.rest_lag_s)  # type: ignore[union-attr]
                    continue
                subs = tr_idx.get(ev.ticker)  # type: ignore[union-attr]
                if tr_all or subs:
                    body = enc.trade_body(ev)  # type: ignore[arg-type]
                    if tr_all:
                        fan(tr_all, trade_t, body)
                    if subs:
                        fan(subs, trade_t, body)
            elif t is Ticker:
                subs = tk_idx.get(ev.ticker)  # type: ignore[union-attr]
                if tk_all or subs:
                    body = enc.ticker_body(ev, states[ev.idx].st.market_id)  # type: ignore[union-attr,arg-type]
                    if tk_all:
                        fan(tk_all, ticker_t, body)
                    if subs:
                        fan(subs, ticker_t, body)
            elif t is Lifecycle:
                if lc_all:
                    body = enc.lifecycle_body(ev, states[ev.idx].st)  # type: ignore[union-attr,arg-type]
                    fan(lc_all, self.templates("market_lifecycle_v2"), body)
            elif t is EventLifecycle and lc_all:
                fan(lc_all, self.templates("event_lifecycle"),
                    enc.event_lifecycle_body(ev))  # type: ignore[arg-type]

    # --- FaultTarget ----------------------------------------------------------------------
    def _terminate(self, sub: Sub, code: int) -> None:
        sess = sub.session
        if sess.subs.pop(sub.sid, None) is None:
            return
        sub.alive = False
        self.remove_sub(sub)
        # The error frame goes out even when the buffer is full (it is the last word).
        sess.out.append(error_frame(None, code, sub.sid))
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

    def connections_of(self, key_id: str | None) -> int:
        return sum(1 for s in self.sessions if s.key_id == key_id)

    def stats(self) -> dict[str, int]:
        return {"connections": len(self.sessions), "frames": self.frames,
                "subscriptions": sum(len(s.subs) for s in self.sessions)}


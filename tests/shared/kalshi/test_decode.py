"""Decoder: captured-style frames of both profiles, seq gap/dup/reorder, malformed input."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.kalshi.decode import REJECT_REASONS, Decoder, ValueCache
from shared.kalshi.models import (
    DeltaRow,
    Duplicate,
    ErrorFrame,
    Lifecycle,
    MissingTimestamp,
    Ok,
    Profile,
    Rejected,
    SeqGap,
    SnapshotRow,
    Subscribed,
    TickerRow,
    TradeRow,
    Unsubscribed,
    ticker_content_hash,
)

FRAMES = Path(__file__).resolve().parents[2] / "data" / "frames"
RX = 1_778_774_531_300_000
T1 = "KXBTCD-26MAY1417-T98999.99"
T2 = "KXBTCD-26MAY1417-T99999.99"


def frame(name: str) -> bytes:
    return (FRAMES / name).read_bytes().strip()


def one(dec: Decoder, name: str) -> object:
    evs = dec.feed(frame(name), RX)
    assert len(evs) == 1, evs
    return evs[0]


def delta(sid: int, seq: int, price: str = "0.5000", d: str = "1.00", ticker: str = T1) -> bytes:
    return orjson.dumps(
        {
            "type": "orderbook_delta",
            "sid": sid,
            "seq": seq,
            "msg": {
                "market_ticker": ticker,
                "price_dollars": price,
                "delta_fp": d,
                "side": "yes",
                "ts_ms": 1778774531204,
            },
        }
    )


# -- fp2026 ------------------------------------------------------------------------------------


def test_fp2026_session_in_order() -> None:
    dec = Decoder(Profile.FP2026)
    assert one(dec, "fp2026/subscribed.json") == Subscribed(1, "orderbook_delta", 3)
    snap = one(dec, "fp2026/orderbook_snapshot.json")
    assert snap == SnapshotRow(
        T1, RX, "ws", ((6100, 12000), (6300, 4550)), ((3400, 8000), (3500, 1200)), 1, None, None, RX
    )
    snap2 = one(dec, "fp2026/orderbook_snapshot_one_side.json")
    assert isinstance(snap2, SnapshotRow)
    assert snap2.yes_levels == () and snap2.no_levels == ((8800, 30000),)
    assert one(dec, "fp2026/orderbook_delta.json") == DeltaRow(
        T1, 1778774531204000, "yes", 6300, -4550, 0, 3, 3, RX
    )
    assert one(dec, "fp2026/ok_update.json") == Ok(3, 3, 3, (T1, T2))
    resync = one(dec, "fp2026/orderbook_snapshot_get_snapshot.json")
    assert isinstance(resync, SnapshotRow) and resync.source == "resync" and resync.seq == 4
    assert one(dec, "fp2026/unsubscribed.json") == Unsubscribed(5, 3, 4)
    assert dec.last_seq(3) is None  # the sid is forgotten
    assert dec.profile is Profile.FP2026


def test_fp2026_trade_ticker_lifecycle_and_replies() -> None:
    dec = Decoder()
    assert one(dec, "fp2026/subscribed_trade.json") == Subscribed(2, "trade", 5)
    assert one(dec, "fp2026/trade.json") == TradeRow(
        "3b8e1f20-6c4d-4a9b-8e77-0d2f5a6c9b13",
        T1,
        1778774531204000,
        6300,
        3700,
        4550,
        "no",
        "no",
        "ask",
        False,
        "ws",
        RX,
    )
    t = one(dec, "fp2026/ticker.json")
    assert t == TickerRow(
        T1,
        1778774531204000,
        6100,
        6500,
        6300,
        912050,
        441000,
        5301,
        2712,
        ticker_content_hash(T1, 1778774531204000, 6100, 6500, 6300, 912050, 441000, 5301, 2712),
        RX,
    )
    lc = one(dec, "fp2026/market_lifecycle_v2.json")
    assert isinstance(lc, Lifecycle)
    assert (lc.kind, lc.ticker, lc.event_type, lc.sid, lc.seq) == (
        "market_lifecycle_v2",
        "KXHIGHNY-26MAY14-B72.5",
        "created",
        6,
        1,
    )
    assert lc.msg["additional_metadata"]["event_ticker"] == "KXHIGHNY-26MAY14"
    ev = one(dec, "fp2026/event_lifecycle.json")
    assert (
        isinstance(ev, Lifecycle)
        and ev.kind == "event_lifecycle"
        and ev.ticker == "KXHIGHNY-26MAY14"
    )
    assert one(dec, "fp2026/ok_list.json") == Ok(
        4, subscriptions=(("ticker", 1), ("orderbook_delta", 7))
    )
    assert one(dec, "fp2026/error.json") == ErrorFrame(4, 8, "Unknown channel name")
    assert one(dec, "fp2026/error_terminal.json") == ErrorFrame(
        9, 25, "Subscription buffer overflow", 3, (T1,)
    )


def test_ticker_hash_is_deterministic_and_distinguishes_updates() -> None:
    a = ticker_content_hash(T1, 1, 6100, 6500, 6300, 1, 2, 3, 4)
    assert a == ticker_content_hash(T1, 1, 6100, 6500, 6300, 1, 2, 3, 4)
    assert a != ticker_content_hash(T1, 1, 6100, 6500, 6300, 1, 2, 3, 5)
    assert ticker_content_hash(T1, 1, None, 0, 0, 0, 0, 0, 0) != ticker_content_hash(
        T1, 1, 0, 0, 0, 0, 0, 0, 0
    )
    assert -(2**63) <= a < 2**63


# -- legacy2025 --------------------------------------------------------------------------------


def test_legacy_frames() -> None:
    dec = Decoder(Profile.LEGACY2025)
    assert one(dec, "legacy2025/subscribed_no_msg.json") == Subscribed(1, None, None)
    snap = one(dec, "legacy2025/orderbook_snapshot.json")
    assert snap == SnapshotRow(
        "KXMLBGAME-25AUG12SDSF-SD",
        RX,
        "ws",
        ((300, 8000000), (400, 810000), (2300, 20000)),
        ((100, 7359000), (7400, 300)),
        1,
        None,
        None,
        RX,
    )
    cents_only = one(dec, "legacy2025/orderbook_snapshot_cents_only.json")
    assert isinstance(cents_only, SnapshotRow)
    assert cents_only.yes_levels == ((4000, 1200), (4100, 700)) and cents_only.no_levels == ()
    assert one(dec, "legacy2025/orderbook_delta.json") == DeltaRow(
        "KXMLBGAME-25AUG12SDSF-SD", 1755032432539000, "no", 5100, -100, 0, 3, 1, RX
    )
    assert dec.profile is Profile.LEGACY2025
    tr = one(dec, "legacy2025/trade.json")
    assert tr == TradeRow(
        "9d2f5a6c-1b13-4e77-8a9b-3b8e1f206c4d",
        "KXMLBGAME-25AUG12SDSF-SD",
        1755032432000000,
        5100,
        4900,
        1000,
        "yes",
        None,
        None,
        None,
        "ws",
        RX,
    )
    tk = one(dec, "legacy2025/ticker.json")
    assert isinstance(tk, TickerRow)
    assert (
        tk.exchange_ts,
        tk.yes_bid,
        tk.yes_ask,
        tk.price,
        tk.volume,
        tk.open_interest,
        tk.dollar_volume,
    ) == (1755032432000000, 5000, 5200, 5100, 3810400, 2055300, 19433)
    never = one(dec, "legacy2025/ticker_never_traded.json")
    assert isinstance(never, TickerRow) and never.price == 0 and never.yes_ask == 10000
    assert one(dec, "legacy2025/ok_ticker_toplevel.json") == Ok(
        2, 4, 1, ("KXMLBGAME-25AUG12SDSF-SD",)
    )
    lc = one(dec, "legacy2025/market_lifecycle_v2.json")
    assert isinstance(lc, Lifecycle) and lc.event_type == "determined"


def test_one_event_gets_one_key_whichever_payload_version_carried_it() -> None:
    """A delta and a ticker update sent as legacy ``ts`` (RFC 3339 with a ns fraction, or
    seconds) and as fp2026 ``ts_ms`` decode to the same exchange_ts: millisecond precision."""
    ms = 1755032432539
    legacy = orjson.dumps({"type": "orderbook_delta", "sid": 1, "seq": 1, "msg": {
        "market_ticker": "A", "price": 51, "delta": -1, "side": "no",
        "ts": "2025-08-12T21:00:32.539836022Z"}})
    fp = orjson.dumps({"type": "orderbook_delta", "sid": 1, "seq": 1, "msg": {
        "market_ticker": "A", "price_dollars": "0.5100", "delta_fp": "-1.00", "side": "no",
        "ts": "2025-08-12T21:00:32.539836Z", "ts_ms": ms}})
    a = Decoder(Profile.LEGACY2025).feed(legacy, RX)[0]
    b = Decoder(Profile.FP2026).feed(fp, RX)[0]
    assert isinstance(a, DeltaRow) and isinstance(b, DeltaRow)
    assert a.exchange_ts == b.exchange_ts == ms * 1000
    assert a[:6] == b[:6]  # the whole identity key (ticker, exchange_ts, side, price, delta, occ)
    tk_legacy = orjson.dumps({"type": "ticker", "sid": 2, "msg": {
        "market_ticker": "A", "price": 51, "time": "2025-08-12T21:00:32.539836Z"}})
    tk_fp = orjson.dumps({"type": "ticker", "sid": 2, "msg": {
        "market_ticker": "A", "price_dollars": "0.5100", "ts_ms": ms}})
    ta = Decoder().feed(tk_legacy, RX)[0]
    tb = Decoder().feed(tk_fp, RX)[0]
    assert isinstance(ta, TickerRow) and isinstance(tb, TickerRow)
    assert ta.exchange_ts == tb.exchange_ts == ms * 1000
    assert ta.content_hash == tb.content_hash


def test_numbers_instead_of_strings_are_parsed_exactly() -> None:
    dec = Decoder()
    raw = orjson.dumps(
        {
            "type": "orderbook_delta",
            "sid": 1,
            "seq": 1,
            "msg": {
                "market_ticker": T1,
                "price_dollars": 0.62,
                "delta_fp": -3.5,
                "side": "no",
                "ts_ms": "1778774531204",
            },
        }
    )
    assert dec.feed(raw, RX) == [DeltaRow(T1, 1778774531204000, "no", 6200, -350, 0, 1, 1, RX)]


# -- sequence ----------------------------------------------------------------------------------


def test_gap_is_reported_before_the_frame_which_is_still_decoded() -> None:
    dec = Decoder()
    assert isinstance(dec.feed(delta(1, 1), RX)[0], DeltaRow)
    evs = dec.feed(delta(1, 4), RX + 5)
    assert evs[0] == SeqGap(1, 2, 4, "orderbook_delta", RX + 5, RX)
    assert isinstance(evs[1], DeltaRow) and evs[1].seq == 4
    assert isinstance(dec.feed(delta(1, 5), RX)[0], DeltaRow)  # continues from the new baseline


def test_duplicate_and_reorder() -> None:
    dec = Decoder()
    dec.feed(delta(1, 1), RX)
    dec.feed(delta(1, 2), RX)
    assert dec.feed(delta(1, 2), RX) == [Duplicate(1, 2)]
    evs = dec.feed(delta(1, 4), RX)  # 3 and 4 swapped
    assert isinstance(evs[0], SeqGap) and evs[0].expected == 3
    assert dec.feed(delta(1, 3), RX) == [Duplicate(1, 3)]  # late frame: dropped


def test_a_restarted_count_is_a_gap_not_a_run_of_duplicates() -> None:
    """A server that restarts a sid's seq at 1 without a resubscribe sends new data: report a
    gap (what happened in between is unknown), keep the frame, count on from 1."""
    dec = Decoder()
    for s in range(1, 8):
        dec.feed(delta(1, s), RX)
    evs = dec.feed(delta(1, 1), RX + 9)
    assert evs[0] == SeqGap(1, 8, 1, "orderbook_delta", RX + 9, RX)
    assert isinstance(evs[1], DeltaRow) and evs[1].seq == 1
    assert [type(e) for e in dec.feed(delta(1, 2), RX)] == [DeltaRow]
    assert dec.feed(delta(1, 2), RX) == [Duplicate(1, 2)]
    trade = orjson.dumps({"type": "trade", "sid": 9, "seq": 5, "msg": {
        "trade_id": "3b8e1f20-6c4d-4a9b-8e77-0d2f5a6c9b13", "market_ticker": "A",
        "yes_price_dollars": "0.5000", "no_price_dollars": "0.5000", "count_fp": "1.00",
        "taker_side": "yes", "ts_ms": 1}})
    dec.feed(trade, RX)
    evs = dec.feed(trade.replace(b'"seq": 5', b'"seq": 1').replace(b'"seq":5', b'"seq":1'), RX)
    assert isinstance(evs[0], SeqGap) and (evs[0].expected, evs[0].got) == (6, 1)
    assert isinstance(evs[1], TradeRow)


def test_sids_are_independent() -> None:
    dec = Decoder()
    dec.feed(delta(1, 1), RX)
    dec.feed(delta(2, 7), RX)
    assert [type(e) for e in dec.feed(delta(2, 8), RX)] == [DeltaRow]
    assert [type(e) for e in dec.feed(delta(1, 2), RX)] == [DeltaRow]


def test_lost_first_frame_after_subscribed_is_a_gap() -> None:
    dec = Decoder()
    dec.feed(frame("fp2026/subscribed.json"), RX)
    evs = dec.feed(delta(3, 2), RX)
    assert isinstance(evs[0], SeqGap) and (evs[0].expected, evs[0].got) == (1, 2)


@pytest.mark.parametrize("ok_seq", [5, 6, 8])
def test_ok_seq_is_reported_never_applied(ok_seq: int) -> None:
    """ok's seq is the last one sent or the next one (undocumented): applying it would drop the
    next delta as a duplicate under the second reading (issue #14, R4). It is never applied; the
    next data frame says whether anything was lost."""
    dec = Decoder()
    for s in range(1, 6):
        dec.feed(delta(3, s), RX)
    evs = dec.feed(orjson.dumps({"id": 3, "sid": 3, "seq": ok_seq, "type": "ok", "msg": {}}), RX)
    assert [type(e) for e in evs] == [Ok] and evs[0].seq == ok_seq  # type: ignore[union-attr]
    assert dec.last_seq(3) == 5
    nxt = dec.feed(delta(3, 6), RX)
    assert [type(e) for e in nxt] == [DeltaRow]
    if ok_seq == 8:  # frames really were lost before the ok: the next frame after it shows it
        later = dec.feed(delta(3, 9), RX)
        assert isinstance(later[0], SeqGap) and (later[0].expected, later[0].got) == (7, 9)


@pytest.mark.parametrize(("seq", "gap"), [(5, False), (6, False), (8, True)])
def test_unsubscribed_seq_reports_a_certain_loss(seq: int, gap: bool) -> None:
    dec = Decoder()
    for s in range(1, 6):
        dec.feed(delta(3, s), RX)
    evs = dec.feed(orjson.dumps({"id": 4, "sid": 3, "seq": seq, "type": "unsubscribed"}), RX)
    assert any(isinstance(e, SeqGap) for e in evs) is gap
    assert isinstance(evs[-1], Unsubscribed) and dec.last_seq(3) is None


def test_delta_without_timestamps_takes_its_receive_time() -> None:
    dec = Decoder()
    raw = orjson.dumps({"type": "orderbook_delta", "sid": 2, "seq": 1, "msg": {
        "market_ticker": T1, "price_dollars": "0.4100", "delta_fp": "3.00", "side": "no"}})
    evs = dec.feed(raw, RX)
    assert [type(e) for e in evs] == [MissingTimestamp, DeltaRow]
    assert evs[0] == MissingTimestamp(2, T1, RX)
    assert evs[1].exchange_ts == RX and evs[1].price == 4100  # type: ignore[union-attr]


def test_rejected_frame_consumes_its_seq_and_names_sid_and_ticker() -> None:
    dec = Decoder()
    dec.feed(delta(1, 1), RX)
    evs = dec.feed(delta(1, 2, price="0.56001"), RX)
    assert len(evs) == 1 and isinstance(evs[0], Rejected)
    assert (evs[0].reason, evs[0].sid, evs[0].ticker, evs[0].frame_type) == (
        "too_precise",
        1,
        T1,
        "orderbook_delta",
    )
    assert [type(e) for e in dec.feed(delta(1, 3), RX)] == [DeltaRow]


def test_shared_cache_gives_the_same_values() -> None:
    cache = ValueCache()
    a, b = Decoder(cache=cache), Decoder(cache=cache)
    ra = a.feed(delta(1, 1, "0.4200", "-7.25"), RX)
    rb = b.feed(delta(9, 1, "0.4200", "-7.25"), RX)
    assert ra[0].price == rb[0].price == 4200 and ra[0].delta == rb[0].delta == -725  # type: ignore[union-attr]
    assert cache.prices == {"0.4200": 4200}
    # a cached string never lends its value to a non-string of equal hash
    evs = a.feed(
        orjson.dumps(
            {
                "type": "orderbook_delta",
                "sid": 1,
                "seq": 2,
                "msg": {
                    "market_ticker": T1,
                    "price_dollars": True,
                    "delta_fp": "1.00",
                    "side": "yes",
                    "ts_ms": 1,
                },
            }
        ),
        RX,
    )
    assert isinstance(evs[0], Rejected) and evs[0].reason == "bad_type"


# -- legacy2025 fast paths agree with the general conversions -----------------------------------

_scalar = st.one_of(
    st.integers(-5, 105), st.booleans(), st.floats(-1, 101, allow_nan=False), st.none(),
    st.text("0123456789-.", max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(_scalar, _scalar, _scalar, _scalar)
def test_legacy_trade_fast_path_matches_trade_fields(yes: object, no: object, count: object,
                                                     ts: object) -> None:
    # decode.py converts integer cents/contracts inline; anything else must come out exactly as
    # the general trade_fields/legacy_ts rules make it (value or rejection reason).
    from shared.kalshi import _fields
    from shared.kalshi.units import UnitError, legacy_ts_to_us, to_ms_precision

    msg: dict[str, object] = {"trade_id": "3B8E1F20-6c4d-4a9b-8e77-0d2f5a6c9b13",
                              "market_ticker": T1, "taker_side": "no"}
    for k, v in (("yes_price", yes), ("no_price", no), ("count", count), ("ts", ts)):
        if v is not None:
            msg[k] = v
    raw = orjson.dumps({"type": "trade", "sid": 4, "seq": 1, "msg": msg})
    evs = Decoder().feed(raw, RX)
    try:
        fields = _fields.trade_fields(msg)
        want: object = TradeRow(fields[0], T1, to_ms_precision(legacy_ts_to_us(msg["ts"])),
                                *fields[1:], "ws", RX)
    except UnitError as exc:
        want = exc.reason
    except KeyError:
        want = "missing_field"
    got = evs[0] if isinstance(evs[0], TradeRow) else evs[0].reason  # type: ignore[union-attr]
    assert got == want


_fraction = st.text("0123456789", min_size=0, max_size=11)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), _fraction, st.sampled_from(["Z", "z", "+00:00"])),
                min_size=1, max_size=6))
def test_legacy_delta_times_match_the_rfc3339_parser(times: list[tuple[int, str, str]]) -> None:
    # the per-connection same-second cache must give what units.rfc3339_to_us gives, frame by
    # frame, whatever the previous frame's second was (or reject it for the same reason), cut
    # to whole ms like every exchange time (issue 15: one precision, whichever payload version)
    from shared.kalshi.units import UnitError, rfc3339_to_us

    dec = Decoder()
    for seq, (sec, frac, tz) in enumerate(times, 1):
        ts = f"2026-05-28T20:26:4{sec}" + (f".{frac}" if frac or seq % 2 else "") + tz
        raw = orjson.dumps({"type": "orderbook_delta", "sid": 1, "seq": seq, "msg": {
            "market_ticker": T1, "price": 56, "delta": -7, "side": "yes", "ts": ts}})
        ev = dec.feed(raw, RX)[0]
        try:
            us = rfc3339_to_us(ts)
            want: object = us - us % 1000
        except UnitError as exc:
            want = exc.reason
        got = ev.exchange_ts if isinstance(ev, DeltaRow) else ev.reason  # type: ignore[union-attr]
        assert got == want, ts


# -- malformed input ---------------------------------------------------------------------------

BAD = [
    (b"not json", "bad_json"),
    (b'{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"A"', "bad_json"),
    (b"\xff\xfe", "bad_json"),
    (b"[1,2,3]", "bad_json"),
    (b'{"sid":1}', "bad_envelope"),
    (b'{"type":"fill","sid":1,"msg":{}}', "unknown_type"),
    (b'{"type":"orderbook_delta","sid":"1","seq":1,"msg":{}}', "bad_envelope"),
    (b'{"type":"orderbook_delta","sid":1,"msg":{}}', "bad_envelope"),
    (
        b'{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"A","delta_fp":"1.00","side":"yes","ts_ms":1}}',
        "missing_field",
    ),
    (
        b'{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"A","price_dollars":"","delta_fp":"1.00","side":"yes","ts_ms":1}}',
        "bad_value",
    ),
    (
        b'{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"A","price_dollars":"1.5000","delta_fp":"1.00","side":"yes","ts_ms":1}}',
        "bad_value",
    ),
    (
        b'{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"A","price_dollars":"0.5","delta_fp":"1.00","side":"maybe","ts_ms":1}}',
        "bad_value",
    ),
    (
        b'{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"market_ticker":"A","price_dollars":"0.5","delta_fp":"1.001","side":"yes","ts_ms":1}}',
        "too_precise",
    ),
    (b'{"type":"orderbook_delta","sid":1,"seq":1,"msg":"oops"}', "bad_type"),
    (
        b'{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A","yes_dollars_fp":[["0.5"]]}}',
        "bad_type",
    ),
    (
        b'{"type":"orderbook_snapshot","sid":1,"seq":1,"msg":{"market_ticker":"A","yes_dollars_fp":"x"}}',
        "bad_type",
    ),
    (
        b'{"type":"trade","sid":1,"seq":1,"msg":{"trade_id":"nope","market_ticker":"A","yes_price_dollars":"0.5","count_fp":"1.00","ts_ms":1}}',
        "bad_value",
    ),
    (
        b'{"type":"trade","sid":1,"seq":1,"msg":{"trade_id":"3b8e1f20-6c4d-4a9b-8e77-0d2f5a6c9b13","market_ticker":"A","yes_price_dollars":"0.5","count_fp":"0.00","ts_ms":1}}',
        "bad_value",
    ),
    (
        b'{"type":"trade","sid":1,"seq":1,"msg":{"trade_id":"3b8e1f20-6c4d-4a9b-8e77-0d2f5a6c9b13","market_ticker":"A","yes_price_dollars":"0.5","count_fp":"1.00","ts":"2026-99-01T00:00:00Z"}}',
        "bad_value",
    ),
    (
        b'{"type":"ticker","sid":1,"msg":{"market_ticker":"A","ts_ms":1,"dollar_volume":1.5}}',
        "bad_type",
    ),
    (
        b'{"type":"market_lifecycle_v2","sid":1,"seq":1,"msg":{"market_ticker":"A"}}',
        "missing_field",
    ),
    (b'{"type":"subscribed","id":1,"msg":{"channel":"trade","sid":"x"}}', "bad_envelope"),
    (b'{"type":42}', "bad_envelope"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD)
def test_malformed_frames_are_rejected_with_a_known_reason(raw: bytes, reason: str) -> None:
    evs = Decoder().feed(raw, RX)
    assert len(evs) == 1 and isinstance(evs[0], Rejected), evs
    assert evs[0].reason == reason
    assert evs[0].raw == raw


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**62), 2**62)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_keys = st.sampled_from(
    [
        "market_ticker",
        "price_dollars",
        "price",
        "delta_fp",
        "delta",
        "side",
        "ts",
        "ts_ms",
        "trade_id",
        "yes_price_dollars",
        "count_fp",
        "yes_dollars_fp",
        "no",
        "event_type",
        "code",
        "msg",
        "market_tickers",
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(
        [
            "orderbook_delta",
            "orderbook_snapshot",
            "trade",
            "ticker",
            "market_lifecycle_v2",
            "event_lifecycle",
            "subscribed",
            "unsubscribed",
            "ok",
            "error",
            "other",
        ]
    ),
    _json,
    _json,
    st.dictionaries(_keys, _json, max_size=6) | _json,
)
def test_feed_never_raises(kind: str, sid: object, seq: object, msg: object) -> None:
    dec = Decoder()
    raw = orjson.dumps({"type": kind, "sid": sid, "seq": seq, "id": seq, "msg": msg})
    for ev in dec.feed(raw, RX) + dec.feed(raw[: len(raw) // 2], RX):
        if isinstance(ev, Rejected):
            assert ev.reason in REJECT_REASONS and ev.reason != "internal_error"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_feed_never_raises_on_bytes(raw: bytes) -> None:
    for ev in Decoder().feed(raw, RX):
        assert not isinstance(ev, Rejected) or ev.reason in REJECT_REASONS

"""Every REST body the simulator serves, in both schema profiles, validates against Kalshi's
published OpenAPI schema (tests/data/kalshi-openapi/, see SOURCE.md there for the source).

A JSON-schema validator with OpenAPI 3.0's dialect (``nullable``, ``format``) checks each body
against the schema the spec gives for that path's 200 (or error) response; a failure names the
path and the first violations, so the simulator is the thing that changes.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from kalshi_sim import Simulator
from tests.fix_sim import SimKey, signed

DATA = Path(__file__).resolve().parents[1] / "data" / "kalshi-openapi"
P = "/trade-api/v2"


def _nullable_refs(node: Any) -> Any:
    """Kalshi writes ``nullable: true`` beside a ``$ref`` ("May be null if there was no trade"),
    which OpenAPI 3.0 says to ignore; we keep the author's stated intent: ref OR null."""
    if isinstance(node, dict):
        node = {k: _nullable_refs(v) for k, v in node.items()}
        if "$ref" in node and node.get("nullable") is True:
            return {"anyOf": [{"$ref": node["$ref"]}, {"enum": [None]}]}
        return node
    if isinstance(node, list):
        return [_nullable_refs(v) for v in node]
    return node


@cache
def spec() -> dict[str, Any]:
    doc = yaml.safe_load((DATA / "openapi.yaml").read_text())
    newer = yaml.safe_load((DATA / "account-limits-3.15.0.yaml").read_text())
    doc["components"]["schemas"].update(newer["components"]["schemas"])  # SOURCE.md: why
    return _nullable_refs(doc)  # type: ignore[no-any-return]


def response_schema(template: str, status: int) -> dict[str, Any]:
    doc = spec()
    resp = doc["paths"][template]["get"]["responses"][str(status)]
    if "$ref" in resp:  # a shared response (#/components/responses/NotFoundError)
        resp = doc["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
    if "content" not in resp:  # an error listed without a body schema: Kalshi's ErrorResponse
        return {"$ref": "#/components/schemas/ErrorResponse"}
    return resp["content"]["application/json"]["schema"]  # type: ignore[no-any-return]


def violations(template: str, status: int, body: Any) -> list[str]:
    schema = {**response_schema(template, status), "components": spec()["components"]}
    v = OAS30Validator(schema, format_checker=oas30_format_checker)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message[:160]}"
            for e in sorted(v.iter_errors(body), key=lambda e: list(map(str, e.path)))]


async def _bodies(sim: Simulator, key: SimKey) -> list[tuple[str, int, str, Any]]:
    """(path template, status, request, body) for every endpoint and shape we serve."""
    cat = sim.catalog
    hot = sim.truth.trades()[0]["ticker"]
    series, event = hot.split("-")[0], hot.rsplit("-", 1)[0]
    start = cat.start_ms // 1000
    candles = {"start_ts": start, "end_ts": start + 3_600, "period_interval": 1}
    open_t = sim.market_tickers(limit=20)
    old = (sim.rest.cutoff_ms(), [i for i in sim.engine.states if sim.rest.is_historical(i)])
    assert old[1], "no market settled before the cutoff: nothing historical to validate"
    hist = cat.market_ticker(old[1][0])
    requests: list[tuple[str, str, Any]] = [
        ("/exchange/status", "/exchange/status", None),
        ("/exchange/schedule", "/exchange/schedule", None),
        ("/series", "/series", None),
        ("/series/{series_ticker}", f"/series/{series}", None),
        ("/events", "/events", {"limit": 5}),
        ("/events", "/events", {"limit": 3, "with_nested_markets": "true"}),
        ("/events/{event_ticker}", f"/events/{event}", None),
        ("/events/{event_ticker}", f"/events/{event}", {"with_nested_markets": "true"}),
        ("/markets", "/markets", {"limit": 1000}),  # ordinary and combo markets, all statuses
        ("/markets", "/markets", {"status": "closed", "limit": 1000}),
        ("/markets/{ticker}", f"/markets/{hot}", None),
        ("/markets/{ticker}", f"/markets/{cat.mve_ticker(0)}", None),
        ("/markets/{ticker}/orderbook", f"/markets/{hot}/orderbook", None),
        ("/markets/{ticker}/orderbook", f"/markets/{hot}/orderbook", {"depth": 1}),
        ("/markets/orderbooks", "/markets/orderbooks", [("tickers", t) for t in open_t]),
        ("/markets/trades", "/markets/trades", {"limit": 200}),
        ("/series/{series_ticker}/markets/{ticker}/candlesticks",
         f"/series/{series}/markets/{hot}/candlesticks", candles),
        ("/series/{series_ticker}/markets/{ticker}/candlesticks",
         f"/series/{series}/markets/{hot}/candlesticks",
         {**candles, "include_latest_before_start": "true", "start_ts": start + 600}),
        ("/markets/candlesticks", "/markets/candlesticks",
         {**candles, "market_tickers": ",".join([hot, *open_t[:3]])}),
        ("/series/{series_ticker}/events/{ticker}/candlesticks",
         f"/series/{series}/events/{event}/candlesticks", candles),
        ("/historical/cutoff", "/historical/cutoff", None),
        ("/historical/markets", "/historical/markets", {"limit": 1000}),
        ("/historical/markets/{ticker}", f"/historical/markets/{hist}", None),
        ("/historical/trades", "/historical/trades", {"limit": 200}),
        ("/account/limits", "/account/limits", None),
    ]
    out = []
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=10) as c:
        for template, path, params in requests:
            r = await c.get(path, params=params, headers=signed(key, "GET", P + path))
            out.append((template, r.status_code, path, r.json()))
        for template, path in (("/markets/{ticker}", "/markets/KXSIM0000-E0000000-M9999999"),
                               ("/events/{event_ticker}", "/events/KXSIM0000-E9999999")):
            r = await c.get(path)
            out.append((template, r.status_code, path, r.json()))
    return out


@pytest.mark.parametrize("profile", ["fp2026", "legacy2025"])
async def test_every_rest_body_validates_against_kalshis_openapi(make_sim, profile):
    # Dozens of requests with a signed key: a Prime budget, since billing is not under test.
    sim = await make_sim(profile=profile, tier="prime", anon_tier="prime", churn_per_s=5.0,
                         historical_window_ms=20_000, historical_step_ms=1_000)
    key = SimKey(*sim.keygen())
    await sim.advance(90_000)
    bodies = await _bodies(sim, key)
    assert len(bodies) == 27
    bad = {}
    for template, status, path, body in bodies:
        assert status in (200, 404), (path, status, body)
        errs = violations(template, status, body)
        if errs:
            bad[f"{status} {path}"] = errs[:5]
    assert not bad, "\n".join(f"{k}:\n  " + "\n  ".join(v) for k, v in bad.items())
    # non-trivial bodies: the lists we validated are not empty
    kinds = {t for t, _, _, b in bodies if any(isinstance(v, list) and v for v in b.values())}
    assert {"/markets", "/markets/trades", "/historical/trades", "/historical/markets",
            "/events", "/markets/orderbooks"} <= kinds


def test_the_validator_catches_a_wrong_body():
    """The check can fail: a Market without its required fields, a wrong type, bad enums."""
    good = {"market": {"ticker": "X"}}
    assert violations("/markets/{ticker}", 200, good)  # missing required fields
    assert violations("/markets/trades", 200, {"trades": [{"trade_id": 1}], "cursor": ""})
    assert violations("/account/limits", 200, {"usage_tier": "basic", "read_limit": 20,
                                               "write_limit": 10})  # the pre-3.15 shape
    assert not violations("/account/limits", 200, {
        "usage_tier": "basic", "read": {"refill_rate": 200, "bucket_capacity": 200},
        "write": {"refill_rate": 100, "bucket_capacity": 100}})

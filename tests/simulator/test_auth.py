"""Auth: RSA-PSS acceptance and every rejection path, REST (401 JSON) and WS handshake."""

from __future__ import annotations

import base64
import time

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from kalshi_sim import Simulator, keygen, sign
from tests.fix_sim import SimKey, signed

LIMITS = "/trade-api/v2/account/limits"


async def _limits(sim: Simulator, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient() as c:
        return await c.get(sim.rest_url + "/account/limits", headers=headers)


async def test_signed_request_accepted_pkcs8_and_pkcs1(sim: Simulator):
    sim_key = SimKey(*sim.keygen(tier="basic"))
    r = await _limits(sim, signed(sim_key, "GET", LIMITS))
    assert r.status_code == 200
    # today's shape (OpenAPI 3.15.0 GetAccountApiLimitsResponse): a BucketLimit per bucket,
    # Basic = 200 read / 100 write tokens per second, each bucket holding one second
    assert r.json() == {"usage_tier": "basic",
                        "read": {"refill_rate": 200, "bucket_capacity": 200},
                        "write": {"refill_rate": 100, "bucket_capacity": 100}}
    key_id, pem = sim.keygen(pkcs1=True, tier="premier")
    assert "BEGIN RSA PRIVATE KEY" in pem
    r = await _limits(sim, signed(SimKey(key_id, pem), "GET", LIMITS))
    assert r.status_code == 200 and r.json()["usage_tier"] == "premier"


async def test_query_string_is_not_signed(sim: Simulator, sim_key: SimKey):
    h = signed(sim_key, "GET", "/trade-api/v2/markets")
    async with httpx.AsyncClient() as c:
        r = await c.get(sim.rest_url + "/markets?limit=5", headers=h)
    assert r.status_code == 200 and len(r.json()["markets"]) == 5


def _tamper(h: dict[str, str], **kw: str) -> dict[str, str]:
    d = dict(h)
    d.update({k.replace("_", "-"): v for k, v in kw.items()})
    return d


@pytest.mark.parametrize("case", ["missing", "unknown_key", "bad_sig", "garbage_b64",
                                  "seconds", "stale", "future", "wrong_path", "wrong_method"])
async def test_rest_rejections_are_401_json(sim: Simulator, sim_key: SimKey, case: str):
    now = int(time.time() * 1000)
    h = signed(sim_key, "GET", LIMITS, now)
    if case == "missing":
        h = {}
    elif case == "unknown_key":
        h["KALSHI-ACCESS-KEY"] = "00000000-0000-4000-8000-000000000000"
    elif case == "bad_sig":
        other = keygen()[1]
        h["KALSHI-ACCESS-SIGNATURE"] = sign(other, h["KALSHI-ACCESS-TIMESTAMP"], "GET", LIMITS)
    elif case == "garbage_b64":
        h["KALSHI-ACCESS-SIGNATURE"] = "not*base64"
    elif case == "seconds":
        ts = str(now // 1000)
        h = {"KALSHI-ACCESS-KEY": sim_key.key_id, "KALSHI-ACCESS-TIMESTAMP": ts,
             "KALSHI-ACCESS-SIGNATURE": sign(sim_key.private_pem, ts, "GET", LIMITS)}
    elif case == "stale":
        h = signed(sim_key, "GET", LIMITS, now - 60_000)
    elif case == "future":
        h = signed(sim_key, "GET", LIMITS, now + 60_000)
    elif case == "wrong_path":
        h = signed(sim_key, "GET", "/trade-api/v2/markets", now)
    elif case == "wrong_method":
        h = signed(sim_key, "POST", LIMITS, now)
    r = await _limits(sim, h)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "unauthorized"
    # ... and the server keeps serving everyone else.
    assert (await _limits(sim, signed(sim_key, "GET", LIMITS))).status_code == 200


async def test_public_get_anonymous_ok_but_bad_signature_rejected(sim: Simulator,
                                                                  sim_key: SimKey):
    async with httpx.AsyncClient(base_url=sim.rest_url) as c:
        assert (await c.get("/markets")).status_code == 200
        h = signed(sim_key, "GET", "/trade-api/v2/markets")
        h["KALSHI-ACCESS-SIGNATURE"] = base64.b64encode(b"x" * 256).decode()
        assert (await c.get("/markets", headers=h)).status_code == 401


async def test_ws_handshake_auth(sim: Simulator, sim_key: SimKey):
    async with connect(sim.ws_url, additional_headers=signed(sim_key, "GET",
                                                             "/trade-api/ws/v2")) as ws:
        await ws.send('{"id":1,"cmd":"list_subscriptions"}')
        assert '"ok"' in await ws.recv()
    for h in ({}, signed(sim_key, "GET", "/trade-api/v2/markets"),
              signed(sim_key, "GET", "/trade-api/ws/v2", int(time.time() * 1000) - 120_000)):
        with pytest.raises(websockets.InvalidStatus) as e:
            async with connect(sim.ws_url, additional_headers=h):
                pass
        assert e.value.response.status_code == 401
    assert sim.ws.counters["ws_auth_rejected"] == 3


async def test_ws_reject_status_403_configurable(make_sim):
    sim = await make_sim(ws_auth_reject_status=403)
    with pytest.raises(websockets.InvalidStatus) as e:
        async with connect(sim.ws_url):
            pass
    assert e.value.response.status_code == 403
    assert e.value.response.body == b"Forbidden\n"


async def test_keygen_cli_writes_registrable_pair(tmp_path, make_sim):
    from kalshi_sim.__main__ import main

    assert main(["keygen", "--key-dir", str(tmp_path)]) == 0
    pub = list(tmp_path.glob("*.pub.pem"))
    key = list(tmp_path.glob("*.key"))
    assert len(pub) == 1 and len(key) == 1
    key_id = key[0].name[:-4]
    sim = await make_sim(key_dir=str(tmp_path))
    r = await _limits(sim, signed(SimKey(key_id, key[0].read_text()), "GET", LIMITS))
    assert r.status_code == 200

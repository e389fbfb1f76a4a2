"""``kalshi-data probe-limits --env demo|prod|sim --api-key ID=PEM``: measure one key's limits.

Kalshi publishes its REST token budgets (docs.kalshi.com/getting_started/rate_limits) but not
its WebSocket limits: markets per subscription (error 26), commands per second (error 27) and
sockets per key (handshake 429). With one real key this measures all four and prints the config
snippet to use:

1. read budget: ``GET /account/limits`` (what Kalshi says), then what it does: batches of
   ``/markets/orderbooks`` are billed per ticker and refused when the bucket holds less than
   their cost, so the largest batch a full bucket accepts is its capacity (to one ticker's cost,
   up to 100 tickers), and the largest accepted half a second after draining it is the refill;
2. markets per subscription: ``orderbook_delta`` subscribes of open markets, sized by bisection
   between what worked and what earned error 26 (each success is unsubscribed at once);
3. command rate: one burst of ``list_subscriptions`` commands on a fresh socket; the replies
   before the first error 27 are the per-second allowance;
4. sockets per key: sockets opened one by one until a handshake is refused with 429.

Everything is bounded (``--max-requests``, ``--max-markets``, ``--max-connections``,
``--max-seconds``) and the probe stops by itself; a bound reached is reported as "at least".
Run it while nothing else uses the key (a running gatherer shares the budget and the sockets).
Only the key id is ever printed, never key material.

Exit codes: 0 measured (possibly partly "at least"); 1 the exchange refused the key or could
not be reached; 2 bad arguments or an unreadable key file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import websockets
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection, connect

from gatherer.config import HOSTS
from shared.kalshi.auth import KeyLoadError, load_private_key, sign_headers

DEFAULT_COST = 10
FIREHOSE_SOCKETS = 6  # the gatherer's default ticker + trade + lifecycle sockets


class ProbeError(Exception):
    """The probe cannot go on (key refused, exchange unreachable); one line for the user."""


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "probe-limits", help="measure one API key's REST budget and WebSocket limits",
        description="Measure a key's read budget, markets per subscription, command rate and "
                    "sockets per key against Kalshi (or the simulator), bounded in requests and "
                    "time, and print the gatherer config to use. Run it while no gatherer uses "
                    "the key.")
    p.add_argument("--env", choices=("demo", "prod", "sim"), required=True)
    p.add_argument("--api-key", required=True, metavar="KEY_ID=PEM",
                   help="the key id and the path of its private key file (PEM)")
    p.add_argument("--rest-url", help="REST base URL (required with --env sim; overrides the "
                                      "environment's recommended host)")
    p.add_argument("--ws-url", help="WebSocket URL (required with --env sim)")
    p.add_argument("--max-requests", type=int, default=60,
                   help="REST requests the probe may make (default 60)")
    p.add_argument("--max-markets", type=int, default=5000,
                   help="largest subscription tried (default 5000)")
    p.add_argument("--max-commands", type=int, default=100,
                   help="commands in the command-rate burst (default 100)")
    p.add_argument("--max-connections", type=int, default=200,
                   help="sockets opened at most (default 200)")
    p.add_argument("--max-seconds", type=float, default=180.0,
                   help="stop after this long whatever is left (default 180)")
    p.set_defaults(run=run)


@dataclass
class Findings:
    key_id: str
    env: str
    tier: str | None = None
    read: dict[str, Any] | None = None  # /account/limits read bucket
    write: dict[str, Any] | None = None
    burst_tokens: int | None = None
    refill_tokens_per_s: float | None = None
    budget_bounded: bool = False
    markets_per_sub: int | None = None
    markets_bounded: bool = False
    markets_tries: int = 0
    cmds_per_s: int | None = None
    cmds_bounded: bool = False
    sockets: int | None = None
    sockets_bounded: bool = False
    rest_requests: int = 0
    notes: list[str] = field(default_factory=list)


class Prober:
    """The four measurements against one exchange with one key."""

    def __init__(self, key_id: str, key: rsa.RSAPrivateKey, rest_url: str, ws_url: str,
                 args: argparse.Namespace) -> None:
        self.key_id = key_id
        self.key = key
        self.rest = rest_url.rstrip("/")
        self.rest_path = urlsplit(self.rest).path
        self.ws_url = ws_url
        self.ws_path = urlsplit(ws_url).path or "/trade-api/ws/v2"
        self.a = args
        self.f = Findings(key_id, args.env)
        self._ids = iter(range(1, 1 << 30))
        self.deadline = time.monotonic() + args.max_seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()

    # ---- REST ------------------------------------------------------------------------------
    def _headers(self, path: str) -> dict[str, str]:
        return sign_headers(self.key_id, self.key, "GET", self.rest_path + path,
                            time.time_ns() // 1_000_000)

    async def _get(self, c: httpx.AsyncClient, path: str, params: Any = None) -> httpx.Response:
        self.f.rest_requests += 1
        return await c.get(self.rest + path, params=params, headers=self._headers(path))

    async def rest_budget(self, c: httpx.AsyncClient) -> list[str]:
        """What /account/limits says, then what the exchange does; returns open markets."""
        r = await self._get(c, "/account/limits")
        if r.status_code in (401, 403):
            raise ProbeError(f"Kalshi refused key {self.key_id} (HTTP {r.status_code}): check the "
                             "key id, the private key, and --env")
        if r.status_code == 200:
            body = r.json()
            self.f.tier = body.get("usage_tier")
            self.f.read = body.get("read") if isinstance(body.get("read"), dict) else None
            self.f.write = body.get("write") if isinstance(body.get("write"), dict) else None
            if self.f.read is None and isinstance(body.get("read_limit"), int):  # older shape
                per_s = body["read_limit"] * DEFAULT_COST
                self.f.read = {"refill_rate": per_s, "bucket_capacity": per_s}
        else:
            self.f.notes.append(f"/account/limits answered HTTP {r.status_code}")
        r = await self._get(c, "/account/endpoint_costs")
        if r.status_code == 200:
            for e in r.json().get("endpoint_costs") or ():
                if isinstance(e, dict) and str(e.get("path", "")).endswith("/markets/orderbooks"):
                    self.item_cost = int(e.get("cost") or DEFAULT_COST)
        tickers = await self.open_markets(c, max(100, self.a.max_markets))
        batch = tickers[:100]
        if not batch:
            self.f.notes.append("no open markets: REST budget not measured")
            return tickers
        # A /markets/orderbooks batch is billed per ticker and refused while the bucket holds
        # less than its cost, forever if it is larger than the bucket: the largest batch a full
        # bucket accepts is its capacity (to 10 tokens; 100 tickers at most).
        stated = self.f.read or {}
        cap_k = await self._largest(c, batch, len(batch), settle=None,
                                    guess=int(stated.get("bucket_capacity", 0)) // self.item_cost)
        if self._cut_short:
            self.f.notes.append("--max-requests or --max-seconds reached: REST budget not measured")
            return tickers
        self.f.burst_tokens = cap_k * self.item_cost
        self.f.budget_bounded = cap_k == len(batch)
        if cap_k:
            # Refill: drain the bucket with that batch, then the largest batch accepted a moment
            # later is what flowed back in.
            got = await self._largest(c, batch, cap_k, settle=0.5,
                                      guess=int(stated.get("refill_rate", 0) * 0.5) // self.item_cost)
            if self._settled:
                self.f.refill_tokens_per_s = round(got * self.item_cost / self._settled, 1)
        return tickers

    item_cost = DEFAULT_COST
    _settled = 0.0
    _cut_short = False

    async def _largest(self, c: httpx.AsyncClient, batch: list[str], top: int,
                       settle: float | None, guess: int = 0) -> int:
        """Largest k <= top such that a k-ticker batch is accepted: on a full bucket (settle
        None) or ``settle`` seconds after draining it with a ``top`` batch. Bisection, starting
        with what /account/limits says (``guess``, then ``guess + 1``) so an honest answer
        costs two tries."""
        lo, hi = 0, top + 1
        tries = [k for k in (guess, guess + 1) if 0 < k <= top]
        k = tries.pop(0) if tries else top
        while hi - lo > 1:
            if self.f.rest_requests >= self.a.max_requests - 2 or self.left() <= 10:
                self._cut_short = True
                break
            await asyncio.sleep(2.1)  # a full bucket, whatever the tier (<= 2 s of budget)
            if settle is not None:
                drained = await self._get(c, "/markets/orderbooks",
                                          [("tickers", t) for t in batch[:top]])
                if drained.status_code != 200:
                    continue
                t0 = time.monotonic()
                await asyncio.sleep(settle)
                self._settled = time.monotonic() - t0
            r = await self._get(c, "/markets/orderbooks", [("tickers", t) for t in batch[:k]])
            if r.status_code == 200:
                lo = k
            elif r.status_code == 429:
                hi = k
            else:
                raise ProbeError(f"GET /markets/orderbooks answered HTTP {r.status_code}")
            tries = [t for t in tries if lo < t < hi]
            k = tries.pop(0) if tries else ((lo + hi) // 2 if hi - lo > 1 else lo)
        return lo

    async def open_markets(self, c: httpx.AsyncClient, want: int) -> list[str]:
        out: list[str] = []
        cursor = ""
        while len(out) < want and self.left() > 0:
            r = await self._get(c, "/markets", {"status": "open", "mve_filter": "exclude",
                                                "limit": 1000, "cursor": cursor})
            if r.status_code == 429:
                await asyncio.sleep(1.0)
                continue
            if r.status_code != 200:
                raise ProbeError(f"GET /markets answered HTTP {r.status_code}")
            body = r.json()
            out += [m["ticker"] for m in body.get("markets") or () if "ticker" in m]
            cursor = body.get("cursor") or ""
            if not cursor:
                break
        return out[:want]

    # ---- WebSocket -------------------------------------------------------------------------
    async def _ws(self) -> ClientConnection:
        headers = sign_headers(self.key_id, self.key, "GET", self.ws_path, time.time_ns() // 1_000_000)
        return await connect(self.ws_url, additional_headers=headers, open_timeout=10,
                             max_size=None, ping_interval=20, proxy=None,
                             user_agent_header="kalshi-data-probe-limits")

    async def _cmd(self, ws: ClientConnection, cmd: str, params: dict[str, Any]) -> int:
        i = next(self._ids)
        await ws.send(orjson.dumps({"id": i, "cmd": cmd, "params": params}).decode())
        return i

    async def _reply(self, ws: ClientConnection, cid: int, timeout: float = 15.0) -> dict[str, Any]:
        """The first command reply carrying ``cid`` (data frames in between are skipped)."""
        end = time.monotonic() + timeout
        while True:
            m = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.1, end - time.monotonic())))
            if isinstance(m, dict) and m.get("id") == cid and m.get("type") != "orderbook_snapshot":
                return m

    async def markets_per_subscription(self, tickers: list[str]) -> None:
        """Largest subscribe that is not refused with error 26 (bisection)."""
        if not tickers:
            self.f.notes.append("no open markets: markets per subscription not measured")
            return
        ws = await self._ws()
        try:
            lo, hi = 0, None  # lo worked, hi earned 26
            n = len(tickers)
            while self.left() > 5:
                self.f.markets_tries += 1
                cid = await self._cmd(ws, "subscribe", {"channels": ["orderbook_delta"],
                                                        "market_tickers": tickers[:n]})
                m = await self._reply(ws, cid)
                if m.get("type") == "subscribed":
                    lo = n
                    sid = m["msg"]["sid"]
                    await self._reply(ws, await self._cmd(ws, "unsubscribe", {"sids": [sid]}))
                else:
                    code = (m.get("msg") or {}).get("code")
                    named = (m.get("msg") or {}).get("market_tickers") or []
                    if code == 26:
                        hi = n
                    elif named:  # a market closed meanwhile: leave it out, same size again
                        tickers = [t for t in tickers if t not in set(named)]
                        n = min(n, len(tickers))
                        continue
                    elif code == 27:
                        await asyncio.sleep(1.1)
                        continue
                    else:
                        self.f.notes.append(f"subscribe of {n} markets: error {code}")
                        break
                if hi is None:
                    break  # the largest size we can try worked
                if hi - lo <= 1:
                    break
                n = (lo + hi) // 2
                await asyncio.sleep(0.2)  # stay clear of the command rate
            self.f.markets_per_sub = lo
            self.f.markets_bounded = hi is None
        finally:
            await ws.close()

    async def command_rate(self) -> None:
        """One burst of commands; those answered before the first error 27 are allowed per s."""
        ws = await self._ws()
        try:
            await asyncio.sleep(1.1)
            n = self.a.max_commands
            ids = [await self._cmd(ws, "list_subscriptions", {}) for _ in range(n)]
            codes: dict[int, Any] = {}
            end = time.monotonic() + 15
            while len(codes) < n and time.monotonic() < end:
                m = orjson.loads(await asyncio.wait_for(ws.recv(), max(0.1, end - time.monotonic())))
                if isinstance(m, dict) and m.get("id") in ids:
                    codes[m["id"]] = (m.get("msg") or {}).get("code") if m.get("type") == "error" else "ok"
            ordered = [codes.get(i) for i in ids]
            first27 = next((k for k, c in enumerate(ordered) if c == 27), None)
            self.f.cmds_per_s = n if first27 is None else first27
            self.f.cmds_bounded = first27 is None
        finally:
            await ws.close()

    async def sockets_per_key(self) -> None:
        socks: list[ClientConnection] = []
        try:
            while len(socks) < self.a.max_connections and self.left() > 2:
                try:
                    socks.append(await self._ws())
                except websockets.InvalidStatus as exc:
                    if exc.response.status_code == 429:
                        self.f.sockets = len(socks)
                        return
                    raise ProbeError(f"WebSocket handshake refused with HTTP "
                                     f"{exc.response.status_code}") from None
            self.f.sockets = len(socks)
            self.f.sockets_bounded = True
        finally:
            await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)

    async def run(self) -> Findings:
        async with httpx.AsyncClient(timeout=10) as c:
            tickers = await self.rest_budget(c)
        tickers = tickers[:self.a.max_markets]
        for step in (lambda: self.markets_per_subscription(tickers), self.command_rate,
                     self.sockets_per_key):
            if self.left() <= 2:
                self.f.notes.append("--max-seconds reached: later measurements skipped")
                break
            try:
                await asyncio.wait_for(step(), self.left())
            except TimeoutError:
                self.f.notes.append("--max-seconds reached during a measurement")
                break
        return self.f


def _at_least(bounded: bool) -> str:
    return "at least " if bounded else ""


def report(f: Findings, seconds: float) -> str:
    lines = [(f"kalshi-data probe-limits: key {f.key_id} on {f.env}, {f.rest_requests} REST "
             f"requests, {seconds:.1f} s"), ""]
    if f.read:
        lines.append(f"REST read budget (GET /account/limits, tier {f.tier}): "
                     f"{f.read.get('refill_rate')} tokens/s, bucket {f.read.get('bucket_capacity')}")
    if f.write:
        lines.append(f"REST write budget: {f.write.get('refill_rate')} tokens/s, bucket "
                     f"{f.write.get('bucket_capacity')}")
    if f.burst_tokens is not None:
        lines.append(f"REST read budget measured: bucket {_at_least(f.budget_bounded)}"
                     f"{f.burst_tokens} tokens (largest /markets/orderbooks batch accepted), "
                     f"refill ~{f.refill_tokens_per_s} tokens/s")
    if f.markets_per_sub is not None:
        lines.append(f"markets per subscription: {_at_least(f.markets_bounded)}"
                     f"{f.markets_per_sub} ({f.markets_tries} subscribes; error 26 above)")
    if f.cmds_per_s is not None:
        lines.append(f"commands per second per socket: {_at_least(f.cmds_bounded)}{f.cmds_per_s}"
                     " (error 27 beyond)")
    if f.sockets is not None:
        lines.append(f"sockets per key: {_at_least(f.sockets_bounded)}{f.sockets}"
                     " (handshake 429 beyond)")
    for n in f.notes:
        lines.append(f"note: {n}")
    lines += ["", "# gatherer config (/etc/kalshi/gatherer.yaml) for this key:"]
    conn: list[str] = []
    if f.markets_per_sub:
        conn.append(f"  markets_per_subscription: {f.markets_per_sub}")
    if f.cmds_per_s:
        conn.append(f"  commands_per_s: {max(0.5, round(f.cmds_per_s * 0.8, 1))}"
                    "     # 80% of what was accepted")
    if f.sockets:
        conn.append(f"  max_per_key: {f.sockets}")
        conn.append(f"  orderbook: {max(1, f.sockets - FIREHOSE_SOCKETS)}"
                    "              # with the default 2 ticker + 2 trade + 2 lifecycle sockets")
    if conn:
        lines += ["connections:", *conn]
    if f.tier:
        lines += ["rate_limit:", f"  tier: {f.tier}",
                  "  discover: true          # the gatherer reads /account/limits at start"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    key_id, sep, pem_path = args.api_key.partition("=")
    if not sep or not key_id or not pem_path:
        print("kalshi-data probe-limits: --api-key: expected KEY_ID=PATH_TO_PRIVATE_KEY_PEM",
              file=sys.stderr)
        return 2
    if args.env == "sim" and not (args.rest_url and args.ws_url):
        print("kalshi-data probe-limits: --env sim needs --rest-url and --ws-url", file=sys.stderr)
        return 2
    try:
        key = load_private_key(Path(pem_path).read_bytes(), key_id)
    except OSError as exc:
        print(f"kalshi-data probe-limits: --api-key {key_id}: cannot read {pem_path} "
              f"({exc.strerror})", file=sys.stderr)
        return 2
    except KeyLoadError as exc:
        print(f"kalshi-data probe-limits: {exc}", file=sys.stderr)
        return 2
    rest_url = args.rest_url or HOSTS[args.env][0]
    ws_url = args.ws_url or HOSTS[args.env][1]
    t0 = time.monotonic()
    prober = Prober(key_id, key, rest_url, ws_url, args)
    try:
        findings = asyncio.run(prober.run())
    except ProbeError as exc:
        print(f"kalshi-data probe-limits: {exc}", file=sys.stderr)
        return 1
    except (httpx.HTTPError, OSError, websockets.WebSocketException) as exc:
        print(f"kalshi-data probe-limits: cannot reach {rest_url} / {ws_url}: "
              f"{type(exc).__name__}", file=sys.stderr)
        return 1
    with contextlib.suppress(BrokenPipeError):
        print(report(findings, time.monotonic() - t0), flush=True)
    return 0

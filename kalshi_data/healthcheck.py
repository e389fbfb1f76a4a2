"""``kalshi-data healthcheck --url http://host:8080``: one summary line and an exit code
a shell script or a systemd ExecStartPost can act on.

Exit codes: 0 healthy, 1 degraded, 2 unhealthy, 3 unreachable (or not a health document).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx

EXIT = {"healthy": 0, "degraded": 1, "unhealthy": 2}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("healthcheck", help="query a service's /health and exit 0/1/2/3",
                       description="Exit 0 healthy, 1 degraded, 2 unhealthy, 3 unreachable.")
    p.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080 (/health is added)")
    p.add_argument("--timeout", type=float, default=5.0)
    p.set_defaults(run=run)


def summarize(doc: dict[str, Any]) -> str:
    """One line: status, who, and the components that are not healthy."""
    who = doc.get("gatherer_id") or ("deduplicator" if "gatherers" in doc else "service")
    bad = [f"{name}={c.get('status')}" for name, c in (doc.get("components") or {}).items()
           if isinstance(c, dict) and c.get("status") not in (None, "healthy")]
    bad += [f"{name}={g.get('status')}" for name, g in (doc.get("gatherers") or {}).items()
            if isinstance(g, dict) and g.get("status") != "healthy"]
    return f"{who}: {doc.get('status')}" + (f" ({', '.join(bad)})" if bad else "")


def run(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    if not url.endswith("/health"):
        url += "/health"
    try:
        resp = httpx.get(url, timeout=args.timeout)
        doc = resp.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"unreachable: {url}: {type(exc).__name__}", file=sys.stderr)
        return 3
    status = doc.get("status") if isinstance(doc, dict) else None
    if status not in EXIT:
        print(f"unreachable: {url}: not a health document (HTTP {resp.status_code})", file=sys.stderr)
        return 3
    print(summarize(doc))
    return EXIT[status]

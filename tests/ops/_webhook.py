"""A local Alertmanager webhook receiver: records every notification it is POSTed.

Alertmanager's local receivers (kalshi_data/fleet/monitoring.py) post to ``URL/<receiver>``, so
each notification is recorded with the receiver that routing chose (pager, chat).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class Notification:
    receiver: str  # the path Alertmanager posted to: the receiver's name
    status: str  # firing | resolved (per alert)
    alertname: str
    labels: dict[str, str]
    received_at: float  # time.time() when it arrived


class WebhookReceiver:
    """``with WebhookReceiver() as hook: ... hook.url ... hook.notifications()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[Notification] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                import time

                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                now = time.time()
                try:
                    doc: dict[str, Any] = json.loads(body)
                except ValueError:
                    doc = {}
                receiver = self.path.strip("/")
                with outer._lock:
                    for a in doc.get("alerts", []):
                        labels = dict(a.get("labels", {}))
                        outer._seen.append(Notification(receiver, str(a.get("status")),
                                                        labels.get("alertname", ""), labels, now))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def notifications(self, alertname: str | None = None, status: str | None = None) -> list[Notification]:
        with self._lock:
            return [n for n in self._seen if (alertname is None or n.alertname == alertname)
                    and (status is None or n.status == status)]

"""A callback receiver for the harnesses: it verifies each signature, processes each webhook-id once, and counts.

It behaves as README's Security section asks of a receiver: a delivery whose signature does not verify is
refused with 401; one whose `webhook-id` was seen before is answered 200 and not processed again.
"""

from __future__ import annotations

import collections
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class WebhookReceiver:
    """Callbacks received on loopback: deliveries per webhook-id, what was processed, and bad signatures."""

    def __init__(self, secret: str) -> None:
        self.webhook = Webhook(secret)
        self.received: collections.Counter[str] = collections.Counter()
        self.processed: dict[str, str] = {}  # webhook-id to the event type it announced, from its first delivery
        self.invalid = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhooks", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/whisperq"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()

    def accept(self, body: bytes, headers: dict[str, str]) -> int:
        """The status code for one delivery; a first-seen id is processed, a repeat only counted."""
        try:
            self.webhook.verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.invalid += 1
            return 401
        message_id = headers["webhook-id"]
        with self._lock:  # deliveries of one id may race: exactly one of them is processed
            self.received[message_id] += 1
            self.processed.setdefault(message_id, json.loads(body)["type"])
        return 200

    @property
    def duplicates(self) -> int:
        """Deliveries of an id received before."""
        return sum(count - 1 for count in self.received.values())


def _handler_for(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(receiver.accept(body, {k.lower(): v for k, v in self.headers.items()}))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler

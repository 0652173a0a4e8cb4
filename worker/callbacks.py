"""Callbacks: signed completion notices, delivered from their own queue by a thread of every worker.

The thread keeps a slow receiver from holding the model: jobs go on in the main thread meanwhile. One delivery
takes at most `callback_timeout_s` in all, and only the answer's status line and headers are read, so no
receiver can hold the thread or fill the worker's memory.
Signatures follow Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), made by its
reference library, so any receiver verifies them with the same library or its ports. The secret is the one the
API recorded at submission, so a worker needs no keys of its own to sign.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from shared import metrics, netguard
from shared.callback_queue import Lease
from shared.clock import utcnow
from shared.errors import TaskNotFound
from shared.netguard import Policy
from shared.schemas import Delivery, Task, TaskPublic
from shared.settings import Settings
from shared.stores import Stores

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.5


def retryable(status_code: int | None) -> bool:
    """Network errors, 5xx, 408 and 429 are tried again; other answers are final."""
    return status_code is None or status_code >= 500 or status_code in (408, 429)


def _outcome(status_code: int | None, error: str | None, refused: bool) -> str:
    """The label an attempt is counted under in the metrics."""
    if error is None:
        return "delivered"
    if refused:
        return "refused"
    return f"http_{status_code}" if status_code else "network_error"


class Deliverer:
    """Takes due callbacks off the queue and delivers them, one at a time, until stopped."""

    def __init__(self, stores: Stores, settings: Settings) -> None:
        self.tasks = stores.tasks
        self.callbacks = stores.callbacks
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="callbacks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.settings.callback_timeout_s + 5)

    def _loop(self) -> None:
        deadline_s = self.settings.callback_timeout_s
        with netguard.client(Policy(self.settings.allowed_hosts), deadline_s, deadline_s=deadline_s) as http:
            while not self._stop.is_set():
                try:
                    lease = self.callbacks.claim()
                    if lease is None:
                        self._stop.wait(IDLE_WAIT_S)
                    else:
                        self.deliver(http, lease)
                except Exception:  # Redis away, say: the lease lapses and counts as a failed attempt
                    log.warning("callback delivery failed; trying again shortly", exc_info=True)
                    self._stop.wait(IDLE_WAIT_S)

    def deliver(self, http: httpx.Client, lease: Lease) -> None:
        """One attempt at one task's callback, recorded on the task."""
        try:
            task = self.tasks.get(lease.task_id)
        except TaskNotFound:
            return
        assert task.callback_url is not None
        message_id, timestamp = f"msg_{task.id}", utcnow()
        body = json.dumps(self.payload(task), separators=(",", ":")).encode()
        started = time.perf_counter()
        headers = self._headers(task, message_id, timestamp, body)
        status_code, error, refused = self._post(http, task.callback_url, headers, body)
        delivery = Delivery(
            at=utcnow(),
            event=f"task.{task.status.value}",
            status_code=status_code,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000),
        )
        settled = self.callbacks.record(lease, delivery, retry=not refused and retryable(status_code))
        metrics.count(self.callbacks.redis, "callbacks", _outcome(status_code, error, refused))
        if settled is None:
            log.warning("callback of task %s: its lease lapsed before the answer (%s) was recorded", task.id, error)
        else:
            log.info("callback of task %s, attempt %d: %s, %s", task.id, settled[0], error or status_code, settled[1])

    def payload(self, task: Task) -> dict[str, Any]:
        """The notice: event type, time, the task as GET /v1/tasks/{id} shows it, and its result's address."""
        result = self.tasks.result(task.id) if self.settings.callback_include_result else None
        view = TaskPublic.build(task, None, result).model_dump(mode="json", exclude={"callback"})
        base = (self.settings.public_url or "").rstrip("/")
        return {
            "type": f"task.{task.status.value}",
            "timestamp": utcnow().isoformat(),
            "data": {"task": view, "result_url": f"{base}/v1/tasks/{task.id}/result"},
        }

    def _headers(self, task: Task, message_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "user-agent": "whisperq-callbacks",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
        }
        secret = self.callbacks.signing_secret(task.id) or self._secret(task.owner)
        if secret:
            headers["webhook-signature"] = Webhook(secret).sign(message_id, timestamp, body.decode())
        return headers

    def _secret(self, owner: str) -> str | None:
        """The worker's own secret for an owner, for tasks submitted without one recorded."""
        key = next((key for key in self.settings.api_keys if key.name == owner), None)
        return (key.webhook_secret if key else None) or self.settings.webhook_secret

    @staticmethod
    def _post(
        http: httpx.Client, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int | None, str | None, bool]:
        """The receiver's status code, an error unless it was 2xx, and whether the address was refused."""
        try:
            with http.stream("POST", url, content=body, headers=headers) as response:
                status_code = response.status_code  # the body is never read: closing drops the connection
        except httpx.HTTPError as exc:
            refusal = netguard.is_refusal(exc)
            return None, refusal or f"{type(exc).__name__}: {exc}", refusal is not None
        return status_code, None if 200 <= status_code < 300 else f"HTTP {status_code}", False

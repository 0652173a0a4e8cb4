"""Callbacks: signed completion notices, delivered from their own queue by a thread of every worker.

The thread keeps a slow receiver from holding the model: jobs go on in the main thread meanwhile.
Signatures follow Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`), made by its
reference library, so any receiver verifies them with the same library or its ports.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from shared import metrics, netguard
from shared.clock import utcnow
from shared.enums import CallbackStatus
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


def backoff(attempt: int, base_s: float) -> float:
    """Seconds before the next try: doubling from `base_s`, with ±50% jitter."""
    return float(base_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5))


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
        with netguard.client(Policy(self.settings.allowed_hosts), self.settings.callback_timeout_s) as http:
            while not self._stop.is_set():
                try:
                    task_id = self.callbacks.claim(lease_s=self.settings.callback_timeout_s + 30)
                    if task_id is None:
                        self._stop.wait(IDLE_WAIT_S)
                    else:
                        self.deliver(http, task_id)
                except Exception:  # Redis away, say: the lease brings the callback back
                    log.warning("callback delivery failed; trying again shortly", exc_info=True)
                    self._stop.wait(IDLE_WAIT_S)

    def deliver(self, http: httpx.Client, task_id: str) -> None:
        """One attempt at one task's callback, recorded on the task."""
        try:
            task = self.tasks.get(task_id)
        except TaskNotFound:
            return
        assert task.callback_url is not None
        message_id, timestamp = f"msg_{task.id}", utcnow()
        body = json.dumps(self.payload(task), separators=(",", ":")).encode()
        started = time.perf_counter()
        headers = self._headers(task, message_id, timestamp, body)
        status_code, error, refused = self._post(http, task.callback_url, headers, body)
        attempt = task.callback_attempts + 1
        delivery = Delivery(
            at=utcnow(),
            event=f"task.{task.status.value}",
            status_code=status_code,
            error=error,
            duration_ms=round((time.perf_counter() - started) * 1000),
        )
        if error is None:
            self.callbacks.record(task.id, delivery, CallbackStatus.DELIVERED, None)
        elif not refused and retryable(status_code) and attempt < self.settings.callback_max_attempts:
            retry_at = utcnow() + timedelta(seconds=backoff(attempt, self.settings.callback_backoff_s))
            self.callbacks.record(task.id, delivery, CallbackStatus.PENDING, retry_at)
        else:
            self.callbacks.record(task.id, delivery, CallbackStatus.FAILED, None)
        metrics.count(self.callbacks.redis, "callbacks", _outcome(status_code, error, refused))
        log.info("callback of task %s, attempt %d: %s", task.id, attempt, error or status_code)

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
        secret = self._secret(task.owner)
        if secret:
            headers["webhook-signature"] = Webhook(secret).sign(message_id, timestamp, body.decode())
        return headers

    def _secret(self, owner: str) -> str | None:
        key = next((key for key in self.settings.api_keys if key.name == owner), None)
        return (key.webhook_secret if key else None) or self.settings.webhook_secret

    @staticmethod
    def _post(
        http: httpx.Client, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int | None, str | None, bool]:
        """The receiver's status code, an error unless it was 2xx, and whether the address was refused."""
        try:
            response = http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            refusal = netguard.is_refusal(exc)
            return None, refusal or f"{type(exc).__name__}: {exc}", refusal is not None
        return response.status_code, None if response.is_success else f"HTTP {response.status_code}", False

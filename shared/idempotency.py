"""Idempotency keys: the task an owner's key created, and the fingerprint of the request that created it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from redis.client import Pipeline

from shared import keys


@dataclass(frozen=True)
class FirstRequest:
    """What a key was first used for."""

    task_id: str
    fingerprint: str


def fingerprint(request: dict[str, Any], media_sha256: str | None) -> str:
    """One digest of a request's fields and its media, so that a retry can be told from a different request."""
    body = json.dumps({"request": request, "media": media_sha256}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()


class IdempotencyStore:
    """Records kept for the task retention time; read and written inside the submit's watched transaction."""

    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s

    def first(self, pipe: Pipeline, owner: str, key: str) -> FirstRequest | None:
        """The request this owner first sent with this key, watching the record until the transaction runs."""
        record = keys.idempotency_key(owner, key)
        pipe.watch(record)  # type: ignore[no-untyped-call]
        raw = pipe.get(record)
        return FirstRequest(**json.loads(raw)) if raw is not None else None

    def record(self, pipe: Pipeline, owner: str, key: str, first: FirstRequest) -> None:
        """Remember the key's task inside the caller's transaction."""
        value = json.dumps({"task_id": first.task_id, "fingerprint": first.fingerprint})
        pipe.set(keys.idempotency_key(owner, key), value, ex=self.ttl_s)

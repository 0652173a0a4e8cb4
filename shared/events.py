"""A task's live events: a Redis stream read by the server-sent-events route.

Workers append progress with each decoded segment; the task store appends each status change itself, in the
same step as the change.
"""

from __future__ import annotations

from typing import Any, cast

from redis import Redis
from redis.client import Pipeline

from shared import keys

MAX_EVENTS = 2000


class EventLog:
    """The event streams of tasks, kept (approximately) to their last MAX_EVENTS entries."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def add(self, task_id: str, event: dict[str, str]) -> None:
        """Append an event (progress, a decoded segment) to the task's live stream."""
        self.redis.xadd(keys.events_key(task_id), cast(Any, event), maxlen=MAX_EVENTS, approximate=True)

    def after(self, task_id: str, last_id: str) -> list[tuple[str, dict[str, str]]]:
        """The task's events after `last_id` ("0" for all), oldest first."""
        entries = cast(
            list[Any], self.redis.xrange(keys.events_key(task_id), min=f"({last_id}" if last_id != "0" else "-")
        )
        return [(raw_id.decode(), {k.decode(): v.decode() for k, v in fields.items()}) for raw_id, fields in entries]

    def delete(self, task_id: str, pipe: Pipeline) -> None:
        """Drop a task's stream inside the caller's transaction."""
        pipe.delete(keys.events_key(task_id))

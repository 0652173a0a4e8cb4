"""Summaries of transcripts, kept beside their task for as long as the task."""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline

from shared import keys


class SummaryStore:
    """The latest summary of each task."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s

    def save(self, task_id: str, summary: str) -> None:
        """Keep a summary beside the task, for as long as the task."""
        ttl = int(self.redis.ttl(keys.task_key(task_id)))
        self.redis.set(keys.summary_key(task_id), summary, ex=ttl if ttl > 0 else self.ttl_s)

    def delete(self, task_id: str, pipe: Pipeline) -> None:
        """Drop a task's summary inside the caller's transaction."""
        pipe.delete(keys.summary_key(task_id))

"""Worker announcements: which workers are alive and which models they serve."""

from __future__ import annotations

from typing import cast

from redis import Redis

from shared import keys
from shared.schemas import WorkerInfo


def announce(redis: Redis, info: WorkerInfo, ttl_s: int) -> None:
    """Say (again) that this worker is alive; the announcement lapses after ttl_s without a refresh."""
    pipe = redis.pipeline()
    pipe.set(keys.worker_key(info.id), info.model_dump_json(), ex=ttl_s)
    pipe.sadd(keys.workers_key(), info.id)
    pipe.execute()


def withdraw(redis: Redis, worker_id: str) -> None:
    """Remove a worker's announcement as it stops."""
    pipe = redis.pipeline()
    pipe.delete(keys.worker_key(worker_id))
    pipe.srem(keys.workers_key(), worker_id)
    pipe.execute()


def live_workers(redis: Redis) -> list[WorkerInfo]:
    """Workers whose announcement has not lapsed; lapsed ones are dropped from the set."""
    ids = sorted(member.decode() for member in cast(set[bytes], redis.smembers(keys.workers_key())))
    if not ids:
        return []
    raw = redis.mget([keys.worker_key(worker_id) for worker_id in ids])
    gone = [worker_id for worker_id, value in zip(ids, raw, strict=True) if value is None]
    if gone:
        redis.srem(keys.workers_key(), *gone)
    return [WorkerInfo.model_validate_json(value) for value in raw if value is not None]


def worker_count(redis: Redis, model: str) -> int:
    """How many live workers serve this model."""
    return sum(1 for worker in live_workers(redis) if worker.model == model)


def served_models(redis: Redis) -> list[str]:
    """Models at least one live worker serves, sorted."""
    return sorted({worker.model for worker in live_workers(redis)})

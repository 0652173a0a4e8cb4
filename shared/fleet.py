"""Worker announcements: which workers are alive, which models they serve, and which job each holds."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import cast

from redis import Redis
from redis.exceptions import RedisError

from shared import keys
from shared.schemas import WorkerInfo

log = logging.getLogger(__name__)


def announce(redis: Redis, info: WorkerInfo, ttl_s: int, holding: str | None = None) -> None:
    """Say (again) that this worker is alive and which jobs it holds (ids separated by spaces: a batch holds
    several); both lapse after ttl_s without a refresh."""
    pipe = redis.pipeline()
    pipe.set(keys.worker_key(info.id), info.model_dump_json(), ex=ttl_s)
    pipe.sadd(keys.workers_key(), info.id)
    if holding is None:
        pipe.delete(keys.worker_holds_key(info.id))
    else:
        pipe.set(keys.worker_holds_key(info.id), holding, ex=ttl_s)
    pipe.execute()


def withdraw(redis: Redis, worker_id: str) -> None:
    """Remove a worker's announcement as it stops."""
    pipe = redis.pipeline()
    pipe.delete(keys.worker_key(worker_id), keys.worker_holds_key(worker_id))
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


def holdings(redis: Redis, worker_ids: Iterable[str]) -> dict[str, set[str]]:
    """The jobs each of these workers holds now, for those that hold any."""
    ids = sorted(worker_ids)
    if not ids:
        return {}
    raw = cast(list[bytes | None], redis.mget([keys.worker_holds_key(worker_id) for worker_id in ids]))
    return {worker_id: set(value.decode().split()) for worker_id, value in zip(ids, raw, strict=True) if value}


def worker_count(redis: Redis, model: str) -> int:
    """How many live workers serve this model."""
    return sum(1 for worker in live_workers(redis) if worker.model == model)


def window_slots(redis: Redis, model: str) -> int:
    """How many windows of long files the live queued-task workers of this model decode at once, together."""
    return sum(worker.batch for worker in live_workers(redis) if worker.model == model and worker.role != "live")


def served_models(redis: Redis) -> list[str]:
    """Models at least one live worker serves, sorted."""
    return sorted({worker.model for worker in live_workers(redis)})


class Presence:
    """One worker's announcement and the job it holds, refreshed by its upkeep and rewritten at once on a change.

    Its client should give up at once while Redis is away (not retry for a minute), so that the worker's upkeep
    can try again every second and announce the worker as soon as Redis is back.
    """

    def __init__(self, redis: Redis, info: WorkerInfo, ttl_s: int) -> None:
        self.redis = redis
        self.info = info
        self.ttl_s = ttl_s
        self._held: dict[int, list[str]] = {}  # by the thread that runs them: the main loop, the priority lane
        self._lock = threading.Lock()

    @property
    def holding(self) -> list[str]:
        """Every job the worker holds, in all its threads."""
        with self._lock:
            return [job_id for jobs in self._held.values() for job_id in jobs]

    def announce(self) -> None:
        """Announce the worker and the jobs it holds (again)."""
        announce(self.redis, self.info, self.ttl_s, " ".join(self.holding) or None)

    def hold(self, job_id: str | None) -> None:
        """Say which job this thread runs now (None once it ends); the upkeep repeats it if Redis misses it now."""
        with self._lock:
            if job_id is None:
                self._held.pop(threading.get_ident(), None)
            else:
                self._held[threading.get_ident()] = [job_id]
        self._say()

    def hold_also(self, job_id: str) -> None:
        """Say this thread holds this job too, beside the one it runs (it joined the batch in hand)."""
        with self._lock:
            self._held.setdefault(threading.get_ident(), []).append(job_id)
        self._say()

    def _say(self) -> None:
        try:
            self.announce()
        except RedisError:
            log.warning("could not announce the job in hand; the upkeep will", exc_info=True)

"""Every store over one Redis client and the upload volume, built once per process and handed to whoever needs one."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from shared.callback_queue import CallbackQueue, Retries
from shared.chunks import ChunkStore
from shared.events import EventLog
from shared.idempotency import IdempotencyStore
from shared.settings import Settings
from shared.storage import UploadStorage
from shared.store import TaskStore
from shared.summaries import SummaryStore


@dataclass(frozen=True)
class Stores:
    """Tasks and results, events, callbacks, summaries, chunks, idempotency keys, and the media on the volume."""

    tasks: TaskStore
    events: EventLog
    callbacks: CallbackQueue
    summaries: SummaryStore
    chunks: ChunkStore
    storage: UploadStorage
    idempotency: IdempotencyStore

    @classmethod
    def open(cls, redis: Redis, settings: Settings) -> Stores:
        """The stores over this client, keeping what they hold for the task retention time."""
        ttl = settings.task_ttl_s
        return cls(
            tasks=TaskStore(redis, ttl),
            events=EventLog(redis),
            callbacks=CallbackQueue(redis, ttl, Retries.of(settings)),
            summaries=SummaryStore(redis, ttl),
            chunks=ChunkStore(redis, ttl),
            storage=UploadStorage(settings.uploads, settings.volume_reserve_bytes),
            idempotency=IdempotencyStore(ttl),
        )

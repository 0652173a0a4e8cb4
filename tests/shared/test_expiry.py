"""Nothing outlives its task: indexes drop expired tasks, and no write after a delete brings a key back untimed."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

import httpx
import pytest
from redis import Redis

from api.auth import Caller
from api.service import TaskService
from shared import keys
from shared.clock import utcnow
from shared.enums import Priority, TaskStatus, TaskType
from shared.errors import TaskNotFound
from shared.lifecycle import Lifecycle
from shared.schemas import Source, Task, TranscribeOptions
from shared.settings import Settings
from shared.stores import Stores
from tests.conftest import DATA, submit, wait_for
from worker.recovery import Janitor

WAV = DATA / "audio" / "fsdd" / "3_theo_0.wav"


def test_the_janitor_prunes_expired_tasks_from_every_index(
    api_factory: Callable[..., httpx.Client], served: Callable[[str], None], redis: Redis, settings: Settings
) -> None:
    served("tiny.en")
    short = settings.model_copy(update={"task_ttl_s": 1})
    api = api_factory(task_ttl_s=1)
    task_ids = [submit(api, WAV, language="en", priority=priority).json()["id"] for priority in ("high", "low")]
    wait_for(lambda: not redis.exists(*(keys.task_key(task_id) for task_id in task_ids)), timeout_s=5)
    stores = Stores.open(redis, short)

    assert stores.tasks.queued_count() == 0, "quotas do not count expired tasks"
    Janitor(redis, Lifecycle(redis, stores, keep_uploads=False), short).sweep()
    indexes = [key for key in redis.scan_iter(match=f"{keys.PREFIX}:*") if redis.type(key) == b"zset"]
    left = {key.decode(): redis.zrange(key, 0, -1) for key in indexes if key != keys.callbacks_due_key().encode()}
    assert left == {}, "every index dropped the expired tasks"
    queued = re.search(r'^whisperq_tasks\{status="queued"\} (\S+)$', api.get("/metrics").text, re.MULTILINE)
    assert queued is not None and float(queued.group(1)) == 0


def finished_task(redis: Redis, stores: Stores) -> Task:
    """A completed task with a callback URL."""
    task = Task(
        id=uuid.uuid4().hex,
        status=TaskStatus.COMPLETED,
        task_type=TaskType.TRANSCRIBE,
        priority=Priority.NORMAL,
        model="tiny.en",
        options=TranscribeOptions(),
        source=Source(),
        created_at=utcnow(),
        callback_url="http://127.0.0.1:9/hook",
    )
    pipe = redis.pipeline()
    pipe.multi()
    stores.tasks.create(task, pipe)
    pipe.execute()
    return task


def test_an_event_after_a_delete_does_not_bring_the_stream_back(redis: Redis, settings: Settings) -> None:
    stores = Stores.open(redis, settings)
    task = finished_task(redis, stores)
    Lifecycle(redis, stores, keep_uploads=False).delete(task)
    stores.events.add(task.id, {"type": "segment", "progress": "0.5"})
    assert not redis.exists(keys.events_key(task.id))


def test_a_redeliver_racing_a_delete_writes_nothing(redis: Redis, settings: Settings) -> None:
    stores = Stores.open(redis, settings)
    lifecycle = Lifecycle(redis, stores, keep_uploads=False)
    task = finished_task(redis, stores)
    looks: list[str] = []

    class Racing(TaskService):
        """The task is deleted right after the redeliver's first look at it."""

        def get(self, task_id: str) -> Task:
            found = super().get(task_id)
            if not looks:
                lifecycle.delete(found)
            looks.append(task_id)
            return found

    service = Racing(redis, stores, lifecycle, settings, Caller(name="anonymous", admin=True))
    with pytest.raises(TaskNotFound):
        service.redeliver(task.id)
    assert not redis.exists(keys.task_key(task.id)), "no stub task without a TTL"
    assert redis.zscore(keys.callbacks_due_key(), task.id) is None

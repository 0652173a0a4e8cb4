"""The task store: the only code that reads and writes task hashes and results, and the task's state machine.

A status change also appends a status entry to the task's event stream and, for a final status of a task
with a callback URL, puts the callback on its queue, in the same atomic step, so no notice is lost.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from string import Template
from typing import Any, cast

from redis import Redis
from redis.client import Pipeline

from shared import keys
from shared.clock import to_ms, utcnow
from shared.enums import FINISHED_STATUSES, CallbackStatus, TaskStatus
from shared.errors import TaskNotFound
from shared.events import MAX_EVENTS
from shared.schemas import Task, TaskQuery, Transcript

_JSON_FIELDS = {"options", "source", "chunk_spans"}

# Writes to a task that still exists and has not finished, so a late worker never revives a
# deleted task nor overwrites a cancelled one. Of the indexed fields only status and language
# change after creation; their indexes move with them. A result gets the task's remaining TTL.
# With an expected worker, it applies only while the task is still that worker's (so that of
# several janitors only one recovers a task). A task with a callback URL that reaches a final status
# is put on the callback queue in the same step, so no notice is lost between the two.
# Every status change is appended to the task's event stream, for live status.
# KEYS: task hash, all-tasks set, callback queue, event stream, [result].
# ARGV: result, index prefix, expected worker or '', field, value, ...
_UPDATE_ACTIVE = Template("""
local finished = $finished
local status = redis.call('HGET', KEYS[1], 'status')
if not status or finished[status] then
  return 0
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'worker') ~= ARGV[3] then
  return 0
end
local id = redis.call('HGET', KEYS[1], 'id')
local score = redis.call('ZSCORE', KEYS[2], id)
for i = 4, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if score and (field == 'status' or field == 'language') then
    local old = redis.call('HGET', KEYS[1], field)
    if old ~= value then
      if old then redis.call('ZREM', ARGV[2] .. field .. ':' .. old, id) end
      redis.call('ZADD', ARGV[2] .. field .. ':' .. value, score, id)
    end
  end
end
if #ARGV >= 4 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 4))
end
local final = redis.call('HGET', KEYS[1], 'status')
if final ~= status then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', $max_events, '*', 'type', 'status', 'status', final)
  redis.call('EXPIRE', KEYS[4], redis.call('TTL', KEYS[1]))
end
if final ~= status and finished[final] and redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
  local now = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'callback_status', '$pending', 'callback_attempts', 0)
  redis.call('ZADD', KEYS[3], now[1] * 1000 + math.floor(now[2] / 1000), id)
end
if KEYS[5] then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[5], ARGV[1], 'PX', ttl)
  else
    redis.call('SET', KEYS[5], ARGV[1])
  end
end
return 1
""").substitute(finished=FINISHED_STATUSES, pending=CallbackStatus.PENDING.value, max_events=MAX_EVENTS)


def _index_keys(fields: Mapping[str, Any]) -> list[str]:
    return [keys.index_key(name, str(fields[name])) for name in keys.INDEXED_FIELDS if fields.get(name) is not None]


def _encode(fields: dict[str, Any]) -> dict[Any, Any]:
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in fields.items()}


def _decode(raw: Mapping[Any, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {key.decode(): value.decode() for key, value in raw.items()}
    for key in _JSON_FIELDS & fields.keys():
        fields[key] = json.loads(fields[key])
    return fields


class TaskStore:
    """Tasks and results in Redis, each kept for the retention time."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._update_active = redis.register_script(_UPDATE_ACTIVE)

    def create(self, task: Task, pipe: Pipeline) -> None:
        """Write a new task and its index entries inside the caller's transaction."""
        key = keys.task_key(task.id)
        fields = task.model_dump(mode="json", exclude_none=True)
        pipe.hset(key, mapping=_encode(fields))
        pipe.expire(key, self.ttl_s)
        score = to_ms(task.created_at)
        for index in [keys.all_tasks_key(), *_index_keys(fields)]:
            pipe.zadd(index, {task.id: score})
        pipe.xadd(keys.events_key(task.id), {"type": "status", "status": task.status.value}, maxlen=MAX_EVENTS)
        pipe.expire(keys.events_key(task.id), self.ttl_s)

    def delete(self, task: Task, pipe: Pipeline) -> None:
        """Remove a task, its result and its index entries inside the caller's transaction."""
        pipe.delete(keys.task_key(task.id), keys.result_key(task.id))
        for index in [keys.all_tasks_key(), *_index_keys(task.model_dump(mode="json"))]:
            pipe.zrem(index, task.id)

    def cancel(self, task_id: str) -> bool:
        """Mark an unfinished task cancelled; False if it had already finished."""
        return self.advance(task_id, TaskStatus.CANCELLED)

    def find(self, query: TaskQuery, owner: str | None = None) -> tuple[list[Task], int]:
        """One page of tasks matching the query (and owned by `owner`, if given), newest first, and the total."""
        filters = query.filters | ({"owner": owner} if owner is not None else {})
        sources = [keys.all_tasks_key(), *(keys.index_key(field, value) for field, value in filters.items())]
        expired = to_ms(utcnow()) - self.ttl_s * 1000
        pipe = self.redis.pipeline()
        for source in sources:
            pipe.zremrangebyscore(source, "-inf", f"({expired}")
        source = sources[0]
        if len(sources) > 1:
            source = keys.listing_key(uuid.uuid4().hex)
            pipe.zinterstore(source, {key: 1 if i == 0 else 0 for i, key in enumerate(sources)})
            pipe.expire(source, 10)
        low = f"({to_ms(query.created_after)}" if query.created_after else "-inf"
        high = f"({to_ms(query.created_before)}" if query.created_before else "+inf"
        pipe.zcount(source, low, high)
        pipe.zrevrangebyscore(source, high, low, start=query.offset, num=query.limit)
        *_, total, ids = pipe.execute()
        return self._many([raw.decode() for raw in ids]), int(total)

    def _many(self, task_ids: Sequence[str]) -> list[Task]:
        pipe = self.redis.pipeline()
        for task_id in task_ids:
            pipe.hgetall(keys.task_key(task_id))
        return [Task.model_validate(_decode(raw)) for raw in pipe.execute() if raw]

    def get(self, task_id: str) -> Task:
        """The task with this id; TaskNotFound if there is none."""
        raw = self.redis.hgetall(keys.task_key(task_id))
        if not raw:
            raise TaskNotFound(f"no task with id {task_id!r}")
        return Task.model_validate(_decode(raw))

    def result(self, task_id: str) -> Transcript | None:
        """The stored transcript of a completed task, if any."""
        raw = self.redis.get(keys.result_key(task_id))
        return Transcript.model_validate_json(raw) if raw else None

    def start(self, task: Task, worker: str, status: TaskStatus) -> bool:
        """Mark the task downloading or processing on this worker; False if it is gone or finished."""
        return self._apply(
            task.id,
            {
                "status": status.value,
                f"{status.value}_at": utcnow().isoformat(),
                "worker": worker,
                "attempts": task.attempts + 1,
                "progress": 0.0,
            },
        )

    def running(self) -> list[Task]:
        """Tasks a worker holds now (downloading or processing)."""
        pipe = self.redis.pipeline()
        for status in (TaskStatus.DOWNLOADING, TaskStatus.PROCESSING):
            pipe.zrange(keys.index_key("status", status.value), 0, -1)
        return self._many([raw.decode() for ids in pipe.execute() for raw in ids])

    def queued_count(self, owner: str | None = None) -> int:
        """How many tasks are queued (of one owner, if given)."""
        queued = keys.index_key("status", TaskStatus.QUEUED.value)
        if owner is None:
            return int(self.redis.zcard(queued))
        scratch = keys.listing_key(uuid.uuid4().hex)
        pipe = self.redis.pipeline()
        pipe.zinterstore(scratch, [queued, keys.index_key("owner", owner)])
        pipe.delete(scratch)
        count, _ = pipe.execute()
        return int(count)

    def queued_ids(self) -> set[str]:
        """Ids of every queued task."""
        members = cast(list[bytes], self.redis.zrange(keys.index_key("status", TaskStatus.QUEUED.value), 0, -1))
        return {raw.decode() for raw in members}

    def active(self, task_id: str) -> bool:
        """True while the task exists and has not finished."""
        status = cast(bytes | None, self.redis.hget(keys.task_key(task_id), "status"))
        return status is not None and not TaskStatus(status.decode()).finished

    def update(self, task_id: str, expect_worker: str | None = None, **fields: Any) -> bool:
        """Set fields (progress, media facts) on an active task (still `expect_worker`'s, if given)."""
        return self._apply(task_id, fields, expect_worker=expect_worker)

    def complete(self, task_id: str, transcript: Transcript, processing_seconds: float) -> bool:
        """Store the result and mark the task completed."""
        rtf = processing_seconds / transcript.duration if transcript.duration > 0 else None
        return self.advance(
            task_id,
            TaskStatus.COMPLETED,
            result=transcript.model_dump_json(),
            progress=1.0,
            processing_seconds=round(processing_seconds, 3),
            real_time_factor=round(rtf, 4) if rtf is not None else None,
        )

    def fail(self, task_id: str, code: str, message: str, expect_worker: str | None = None) -> bool:
        """Mark the task failed with a machine code and a sentence."""
        return self.advance(
            task_id, TaskStatus.FAILED, expect_worker=expect_worker, error_code=code, error_message=message
        )

    def advance(
        self,
        task_id: str,
        status: TaskStatus,
        result: str | None = None,
        expect_worker: str | None = None,
        **fields: Any,
    ) -> bool:
        """Move an active task (still `expect_worker`'s, if given) to a new status, stamping `<status>_at`."""
        fields.update(status=status.value, **{f"{status.value}_at": utcnow().isoformat()})
        return self._apply(task_id, fields, result, expect_worker)

    def _apply(
        self, task_id: str, fields: dict[str, Any], result: str | None = None, expect_worker: str | None = None
    ) -> bool:
        present = {key: value for key, value in fields.items() if value is not None}
        pairs = (item for pair in _encode(present).items() for item in pair)
        args = [result or "", keys.index_prefix(), expect_worker or "", *pairs]
        task_keys = [keys.task_key(task_id), keys.all_tasks_key(), keys.callbacks_due_key(), keys.events_key(task_id)]
        task_keys += [keys.result_key(task_id)] if result else []
        return bool(self._update_active(keys=task_keys, args=args))

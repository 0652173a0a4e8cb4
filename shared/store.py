"""The task store: the only code that reads and writes task hashes and results."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from redis import Redis
from redis.client import Pipeline

from shared import keys
from shared.enums import TaskStatus
from shared.errors import TaskNotFound
from shared.schemas import Task, Transcript

_JSON_FIELDS = {"options", "source"}

# Writes to a task that still exists and has not finished, so a late worker never revives a
# deleted task nor overwrites a cancelled one. A result, when given, gets the task's remaining TTL.
_UPDATE_ACTIVE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status or status == 'completed' or status == 'failed' or status == 'cancelled' then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if KEYS[2] then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ttl)
  else
    redis.call('SET', KEYS[2], ARGV[1])
  end
end
return 1
"""


def utcnow() -> datetime:
    """The current time, in UTC."""
    return datetime.now(timezone.utc)


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
        """Write a new task inside the caller's transaction."""
        key = keys.task_key(task.id)
        pipe.hset(key, mapping=_encode(task.model_dump(mode="json", exclude_none=True)))
        pipe.expire(key, self.ttl_s)

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

    def start(self, task: Task, worker: str) -> bool:
        """Mark the task processing on this worker; False if it is gone or finished."""
        return self._transition(task.id, TaskStatus.PROCESSING, worker=worker, attempts=task.attempts + 1, progress=0.0)

    def update(self, task_id: str, **fields: Any) -> bool:
        """Set fields (progress, media facts) on an active task."""
        return self._apply(task_id, fields)

    def complete(self, task_id: str, transcript: Transcript, processing_seconds: float) -> bool:
        """Store the result and mark the task completed."""
        rtf = processing_seconds / transcript.duration if transcript.duration > 0 else None
        fields = {
            "progress": 1.0,
            "processing_seconds": round(processing_seconds, 3),
            "real_time_factor": round(rtf, 4) if rtf is not None else None,
        }
        return self._transition(task_id, TaskStatus.COMPLETED, result=transcript.model_dump_json(), **fields)

    def fail(self, task_id: str, code: str, message: str) -> bool:
        """Mark the task failed with a machine code and a sentence."""
        return self._transition(task_id, TaskStatus.FAILED, error_code=code, error_message=message)

    def _transition(self, task_id: str, status: TaskStatus, result: str | None = None, **fields: Any) -> bool:
        fields.update(status=status.value, **{f"{status.value}_at": utcnow().isoformat()})
        return self._apply(task_id, fields, result)

    def _apply(self, task_id: str, fields: dict[str, Any], result: str | None = None) -> bool:
        present = {key: value for key, value in fields.items() if value is not None}
        args = [result or "", *(item for pair in _encode(present).items() for item in pair)]
        task_keys = [keys.task_key(task_id)] + ([keys.result_key(task_id)] if result else [])
        return bool(self._update_active(keys=task_keys, args=args))

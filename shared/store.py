"""The task store: the only code that reads and writes task hashes and results, and the task's state machine.

A status change also appends a status entry to the task's event stream and, for a final status of a task
with a callback URL, puts the callback on its queue, in the same atomic step, so no notice is lost. Each run
of a task has a token (`run`, its attempt number); a worker's writes name it, so they apply only while that
run holds the task (see `shared.fencing`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any, cast

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.client import Pipeline
from redis.exceptions import NoScriptError, WatchError

from shared import fencing, keys
from shared.clock import to_ms, utcnow
from shared.enums import FINISHED_STATUSES, CallbackStatus, TaskStatus
from shared.errors import TaskNotFound
from shared.events import MAX_EVENTS
from shared.fencing import LUA_FENCED, Fence
from shared.schemas import Delivery, RenderedTranscript, Task, TaskQuery, Transcript

_JSON_FIELDS = {"options", "source", "chunk_spans"}

# Statuses of a task that a worker holds.
RUNNING = (TaskStatus.DOWNLOADING, TaskStatus.PROCESSING)

# Writes to a task that still exists and has not finished, so a late worker never revives a
# deleted task nor overwrites a cancelled one. A write may name the statuses it applies in and the
# fences it applies under: a worker's writes carry its run's token (see `shared.fencing`), so a worker
# taken for dead cannot write over a newer run. `start` begins a run (its token is the attempt number,
# returned); `requeue` ends one, so no worker writes in its name again and no janitor requeues it twice.
# Of the indexed fields only status and language change after creation; their indexes move with them.
# A result gets the task's remaining TTL. A task with a callback URL that reaches a final status is
# put on the callback queue in the same step, so no notice is lost between the two. Every status
# change is appended to the task's event stream, for live status.
# KEYS: task hash, all-tasks set, callback queue, event stream, result, index set, fence keys...
# ARGV: result or '', index prefix, mode ('', 'start' or 'requeue'), statuses allowed (space-separated) or '',
#       fence count, fence field and token pairs..., field, value, ...
_APPLY = Template("""
$fenced
local finished = $finished
local status = redis.call('HGET', KEYS[1], 'status')
if not status or finished[status] then
  return 0
end
if ARGV[4] ~= '' and not string.find(' ' .. ARGV[4] .. ' ', ' ' .. status .. ' ', 1, true) then
  return 0
end
local count = tonumber(ARGV[5])
if not fenced(7, 6, count) then
  return 0
end
local outcome = 1
if ARGV[3] == 'start' then
  outcome = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'run', outcome)
elseif ARGV[3] == 'requeue' then
  redis.call('HDEL', KEYS[1], 'run', 'worker')
end
local first = 6 + 2 * count
local id = redis.call('HGET', KEYS[1], 'id')
local score = redis.call('ZSCORE', KEYS[2], id)
for i = first, #ARGV, 2 do
  local field, value = ARGV[i], ARGV[i + 1]
  if score and (field == 'status' or field == 'language') then
    local old = redis.call('HGET', KEYS[1], field)
    if old ~= value then
      if old then redis.call('ZREM', ARGV[2] .. field .. ':' .. old, id) end
      redis.call('ZADD', ARGV[2] .. field .. ':' .. value, score, id)
      redis.call('SADD', KEYS[6], ARGV[2] .. field .. ':' .. value)
    end
  end
end
if #ARGV >= first then
  redis.call('HSET', KEYS[1], unpack(ARGV, first))
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
if ARGV[1] ~= '' then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then
    redis.call('SET', KEYS[5], ARGV[1], 'PX', ttl)
  else
    redis.call('SET', KEYS[5], ARGV[1])
  end
end
return outcome
""").substitute(
    fenced=LUA_FENCED, finished=FINISHED_STATUSES, pending=CallbackStatus.PENDING.value, max_events=MAX_EVENTS
)

# Put a finished task's callback on the queue again, with a fresh series of attempts, if the task is still there
# (a redeliver racing a delete writes nothing). KEYS: task hash, callback queue.
_REDELIVER = Template("""
local finished = $finished
local status = redis.call('HGET', KEYS[1], 'status')
if not status or not finished[status] or redis.call('HEXISTS', KEYS[1], 'callback_url') == 0 then
  return 0
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'callback_status', '$pending', 'callback_attempts', 0)
redis.call('ZADD', KEYS[2], now[1] * 1000 + math.floor(now[2] / 1000), redis.call('HGET', KEYS[1], 'id'))
return 1
""").substitute(finished=FINISHED_STATUSES, pending=CallbackStatus.PENDING.value)

# Drop the ids of expired tasks from every index (and forget indexes left empty), at most `limit` per index.
# KEYS: index set, all-tasks set. ARGV: created before (ms), task key prefix, limit. Returns how many were dropped.
_PRUNE = """
local dropped = 0
local indexes = redis.call('SMEMBERS', KEYS[1])
table.insert(indexes, KEYS[2])
for _, index in ipairs(indexes) do
  local old = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
  for _, id in ipairs(old) do
    if redis.call('EXISTS', ARGV[2] .. id) == 0 then
      redis.call('ZREM', index, id)
      dropped = dropped + 1
    end
  end
  if index ~= KEYS[2] and redis.call('EXISTS', index) == 0 then
    redis.call('SREM', KEYS[1], index)
  end
end
return dropped
"""

# Ids of expired tasks the janitor drops from each index in one sweep.
_PRUNE_LIMIT = 1000


def run_fence(task_id: str, run: int | None) -> Fence:
    """The fence of one run of a task; with no run, a fence that never holds."""
    return Fence(keys.task_key(task_id), "run", str(run) if run else "")


def _index_keys(fields: Mapping[str, Any]) -> list[str]:
    return [keys.index_key(name, str(fields[name])) for name in keys.INDEXED_FIELDS if fields.get(name) is not None]


def _encode(fields: dict[str, Any]) -> dict[Any, Any]:
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in fields.items()}


def _decode(raw: Mapping[Any, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {key.decode(): value.decode() for key, value in raw.items()}
    for key in _JSON_FIELDS & fields.keys():
        fields[key] = json.loads(fields[key])
    return fields


@dataclass(frozen=True)
class Stored:
    """A task as one status poll reads it, unparsed: its hash, its callback attempts, whether it has a result, and
    the id of the last entry of its event stream ("0-0" for none)."""

    fields: dict[bytes, bytes]
    deliveries: list[bytes]
    has_result: bool
    last_event: str

    @property
    def fingerprint(self) -> bytes:
        """A digest of everything stored but the event id: equal digests, the same task to show."""
        digest = hashlib.blake2b(digest_size=16)
        for key in sorted(self.fields):
            digest.update(b"%d:%s%d:%s" % (len(key), key, len(self.fields[key]), self.fields[key]))
        for item in self.deliveries:
            digest.update(b"d%d:%s" % (len(item), item))
        digest.update(b"r1" if self.has_result else b"r0")
        return digest.digest()

    @property
    def owner(self) -> str:
        """The name of the key that created the task."""
        return self.fields.get(b"owner", b"anonymous").decode()

    @property
    def task(self) -> Task:
        """The task, validated."""
        return Task.model_validate(_decode(self.fields))

    @property
    def delivered(self) -> list[Delivery]:
        """The callback attempts, validated."""
        return [Delivery.model_validate_json(item) for item in self.deliveries]


# A poll's read as one command: the stream's last id first, then the hash, the callback attempts and whether there is
# a result (a pipeline of four costs the async client four times the work of one reply).
_READ_POLL = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
return {last[1] and last[1][1] or false, redis.call('HGETALL', KEYS[2]), redis.call('LRANGE', KEYS[3], 0, -1),
        redis.call('EXISTS', KEYS[4])}
"""
_READ_POLL_SHA = hashlib.sha1(_READ_POLL.encode()).hexdigest()


async def read_stored(redis: AsyncRedis, task_id: str) -> Stored:
    """Read a task for a poll in one round trip on the async client; TaskNotFound if there is none.

    The stream's last id is read first: a change after it is then either in the fields read or in the stream after
    that id, so a long poll that waits on the stream from there misses none.
    """
    names = [keys.events_key(task_id), keys.task_key(task_id), keys.deliveries_key(task_id), keys.result_key(task_id)]
    try:
        last, flat, deliveries, result = await redis.evalsha(_READ_POLL_SHA, len(names), *names)
    except NoScriptError:
        last, flat, deliveries, result = await redis.eval(_READ_POLL, len(names), *names)
    if not flat:
        raise TaskNotFound(f"no task with id {task_id!r}")
    fields = dict(zip(flat[::2], flat[1::2], strict=True))
    return Stored(fields, deliveries, bool(result), last.decode() if last else "0-0")


async def read_result(redis: AsyncRedis, task_id: str) -> bytes | None:
    """A task's stored result as raw JSON: validated when the worker stored it, and never changed after."""
    result = await redis.get(keys.result_key(task_id))
    return cast(bytes | None, result)


class TaskStore:
    """Tasks and results in Redis, each kept for the retention time."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._apply_script = redis.register_script(_APPLY)
        self._redeliver = redis.register_script(_REDELIVER)
        self._prune = redis.register_script(_PRUNE)

    def create(self, task: Task, pipe: Pipeline) -> None:
        """Write a new task and its index entries inside the caller's transaction."""
        key = keys.task_key(task.id)
        fields = task.model_dump(mode="json", exclude_none=True)
        pipe.hset(key, mapping=_encode(fields))
        pipe.expire(key, self.ttl_s)
        score = to_ms(task.created_at)
        indexes = _index_keys(fields)
        for index in [keys.all_tasks_key(), *indexes]:
            pipe.zadd(index, {task.id: score})
        pipe.sadd(keys.indexes_key(), *indexes)
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
        pipe = self.redis.pipeline()
        self._drop_expired(sources, pipe)
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

    def _drop_expired(self, indexes: Sequence[str], pipe: Pipeline) -> None:
        """Drop tasks older than the retention time (so expired) from these indexes, inside the caller's pipeline."""
        expired = to_ms(utcnow()) - self.ttl_s * 1000
        for index in indexes:
            pipe.zremrangebyscore(index, "-inf", f"({expired}")

    def prune(self) -> int:
        """Drop expired tasks from every index, so counts and quotas leave them out; how many entries went."""
        cutoff = to_ms(utcnow()) - self.ttl_s * 1000
        args: list[int | str] = [cutoff, keys.task_key(""), _PRUNE_LIMIT]
        return int(self._prune(keys=[keys.indexes_key(), keys.all_tasks_key()], args=args))

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

    def start(self, task: Task, worker: str, status: TaskStatus) -> int:
        """Begin a run of a queued task on this worker, downloading or processing; its token, 0 if not queued."""
        fields = {"status": status.value, f"{status.value}_at": utcnow().isoformat(), "worker": worker, "progress": 0.0}
        return self._apply(task.id, fields, mode="start", allowed=(TaskStatus.QUEUED,))

    def requeue(self, task: Task, push: Callable[[Pipeline], object]) -> bool:
        """End the run `task.run` and queue the task again, with `push` adding its job, in one transaction.

        Applies only while that run still holds the task: of several janitors one wins, and a task is never put
        back twice for one lost run. False if the run had ended or was put back already.
        """
        key = keys.task_key(task.id)
        fence = run_fence(task.id, task.run)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py leaves `watch` untyped
                status, run = cast(list[bytes | None], pipe.hmget(key, "status", "run"))
                if run is None or run.decode() != fence.token or status not in {s.value.encode() for s in RUNNING}:
                    return False
                pipe.multi()
                queued = {"status": TaskStatus.QUEUED.value, "progress": 0.0}
                script_keys, args = self._script_input(task.id, queued, None, [fence], "requeue", RUNNING)
                self._apply_script(keys=script_keys, args=args, client=pipe)
                push(pipe)
                pipe.execute()
            except WatchError:
                return False
        return True

    def running(self) -> list[Task]:
        """Tasks a worker holds now (downloading or processing)."""
        pipe = self.redis.pipeline()
        for status in RUNNING:
            pipe.zrange(keys.index_key("status", status.value), 0, -1)
        return self._many([raw.decode() for ids in pipe.execute() for raw in ids])

    def queued_count(self, owner: str | None = None) -> int:
        """How many unexpired tasks are queued (of one owner, if given)."""
        queued = keys.index_key("status", TaskStatus.QUEUED.value)
        pipe = self.redis.pipeline()
        if owner is None:
            self._drop_expired([queued], pipe)
            pipe.zcard(queued)
            return int(pipe.execute()[-1])
        self._drop_expired([queued, keys.index_key("owner", owner)], pipe)
        scratch = keys.listing_key(uuid.uuid4().hex)
        pipe.zinterstore(scratch, [queued, keys.index_key("owner", owner)])
        pipe.delete(scratch)
        *_, count, _ = pipe.execute()
        return int(count)

    def queued_ids(self) -> set[str]:
        """Ids of every queued task."""
        members = cast(list[bytes], self.redis.zrange(keys.index_key("status", TaskStatus.QUEUED.value), 0, -1))
        return {raw.decode() for raw in members}

    def active(self, task_id: str) -> bool:
        """True while the task exists and has not finished."""
        status = cast(bytes | None, self.redis.hget(keys.task_key(task_id), "status"))
        return status is not None and not TaskStatus(status.decode()).finished

    def update(self, task_id: str, fences: Sequence[Fence] = (), **fields: Any) -> bool:
        """Set fields (progress, media facts) on an active task, while every fence (a worker's run) holds."""
        return bool(self._apply(task_id, fields, fences=fences))

    def complete(
        self,
        task_id: str,
        transcript: Transcript | RenderedTranscript,
        processing_seconds: float,
        fences: Sequence[Fence] = (),
    ) -> bool:
        """Store the result and mark the task completed, while every fence holds."""
        rtf = processing_seconds / transcript.duration if transcript.duration > 0 else None
        result = transcript.json if isinstance(transcript, RenderedTranscript) else transcript.model_dump_json()
        return self.advance(
            task_id,
            TaskStatus.COMPLETED,
            result=result,
            fences=fences,
            progress=1.0,
            processing_seconds=round(processing_seconds, 3),
            real_time_factor=round(rtf, 4) if rtf is not None else None,
        )

    def fail(self, task_id: str, code: str, message: str, fences: Sequence[Fence] = ()) -> bool:
        """Mark the task failed with a machine code and a sentence, while every fence holds."""
        return self.advance(task_id, TaskStatus.FAILED, fences=fences, error_code=code, error_message=message)

    def advance(
        self,
        task_id: str,
        status: TaskStatus,
        result: str | None = None,
        fences: Sequence[Fence] = (),
        **fields: Any,
    ) -> bool:
        """Move an active task to a new status, stamping `<status>_at`, while every fence holds."""
        fields.update(status=status.value, **{f"{status.value}_at": utcnow().isoformat()})
        return bool(self._apply(task_id, fields, result, fences))

    def redeliver(self, task_id: str) -> bool:
        """Queue a finished task's callback again, with a fresh series of attempts; False if the task is gone."""
        return bool(self._redeliver(keys=[keys.task_key(task_id), keys.callbacks_due_key()]))

    def _apply(
        self,
        task_id: str,
        fields: dict[str, Any],
        result: str | None = None,
        fences: Sequence[Fence] = (),
        mode: str = "",
        allowed: Sequence[TaskStatus] = (),
    ) -> int:
        script_keys, args = self._script_input(task_id, fields, result, fences, mode, allowed)
        return int(self._apply_script(keys=script_keys, args=args))

    @staticmethod
    def _script_input(
        task_id: str,
        fields: dict[str, Any],
        result: str | None,
        fences: Sequence[Fence],
        mode: str,
        allowed: Sequence[TaskStatus],
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the `_APPLY` script for one write."""
        present = {key: value for key, value in fields.items() if value is not None}
        pairs = [item for pair in _encode(present).items() for item in pair]
        fence_keys, fence_args = fencing.script_args(fences)
        statuses = " ".join(status.value for status in allowed)
        args = [result or "", keys.index_prefix(), mode, statuses, len(fences), *fence_args, *pairs]
        task_keys = [
            keys.task_key(task_id),
            keys.all_tasks_key(),
            keys.callbacks_due_key(),
            keys.events_key(task_id),
            keys.result_key(task_id),
            keys.indexes_key(),
            *fence_keys,
        ]
        return task_keys, args

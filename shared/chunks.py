"""Chunks of long files: the only code that reads and writes a split task's chunk hash.

One hash per split task holds the plan (the chunks' places on the timeline), the language every
chunk is decoded in, the run of the task that made the plan, and per chunk its state (a `ChunkStatus`),
worker, attempts, seconds finished and, once done, its segments on the original timeline. A chunk in
hand carries its run's token (`run:<index>`, its attempt number): a worker's writes for the chunk count
only while its run holds it, and the plan counts only while the run that made it holds the task.

A task keeps only as many chunks on the queue or in hand as there are workers for its model; the
others stay pending and are queued as chunks finish, at the back of the queue, so tasks sent after a
long file of the same priority wait for one chunk, not for the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any, cast

from pydantic import TypeAdapter
from redis import Redis
from redis.client import Pipeline
from redis.exceptions import WatchError

from shared import keys
from shared.enums import ChunkStatus, TaskStatus
from shared.fencing import Fence
from shared.schemas import Chunk, Segment

_SEGMENTS = TypeAdapter(list[Segment])


def _script(source: str) -> str:
    """A Lua script with the chunk states (and the task status it checks) taken from the enums."""
    states = {state.name.lower(): state.value for state in ChunkStatus}
    return Template(source).substitute(states, task_processing=TaskStatus.PROCESSING.value)


def chunk_fence(task_id: str, index: int, attempt: int) -> Fence:
    """The fence of one run of a chunk (its attempt number): it holds while that run has the chunk in hand."""
    return Fence(keys.chunks_key(task_id), f"run:{index}", str(attempt))


# Record a plan made by the task's run `run`, while that run still holds the task, replacing any earlier plan.
# KEYS: task hash, chunk hash. ARGV: run, TTL (s), field, value, ... Returns 1, or 0 if the run no longer holds it.
_CREATE = _script("""
if redis.call('HGET', KEYS[1], 'status') ~= '$task_processing' or redis.call('HGET', KEYS[1], 'run') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'run', ARGV[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
""")

# Move pending chunks to queued, first ones first, until `want` are queued or in hand.
# KEYS: chunk hash. ARGV: chunk count, want. Returns the indexes now queued (for the caller to enqueue).
_TAKE = _script("""
local inflight, pending = 0, {}
for j = 0, tonumber(ARGV[1]) - 1 do
  local state = redis.call('HGET', KEYS[1], 'state:' .. j)
  if state == '$queued' or state == '$processing' then
    inflight = inflight + 1
  elseif state == '$pending' then
    table.insert(pending, j)
  end
end
local taken = {}
for k = 1, math.min(#pending, tonumber(ARGV[2]) - inflight) do
  redis.call('HSET', KEYS[1], 'state:' .. pending[k], '$queued')
  table.insert(taken, pending[k])
end
return taken
""")

# A chunk's plan is the task's while the run that made it still holds the task.
_PLAN_HOLDS = """
local function plan_holds()
  return redis.call('HGET', KEYS[1], 'status') == '$task_processing'
    and redis.call('HGET', KEYS[1], 'run') == redis.call('HGET', KEYS[2], 'run')
end
"""

# Take a queued chunk for a worker: a new run of the chunk, whose token is its attempt number.
# KEYS: task hash, chunk hash. ARGV: index, worker. Returns the attempt number, or 0.
_CLAIM = _script(
    _PLAN_HOLDS
    + """
local i = ARGV[1]
if not plan_holds() or redis.call('HGET', KEYS[2], 'state:' .. i) ~= '$queued' then return 0 end
local attempt = redis.call('HINCRBY', KEYS[2], 'attempts:' .. i, 1)
redis.call('HSET', KEYS[2], 'state:' .. i, '$processing', 'worker:' .. i, ARGV[2], 'run:' .. i, attempt,
  'done_s:' .. i, 0)
return attempt
"""
)

# Record seconds finished in a chunk while its run holds it; returns the seconds finished over all chunks.
# KEYS: task hash, chunk hash. ARGV: index, attempt, seconds, chunk count. Returns -1 if the run no longer holds it.
_PROGRESS = _script(
    _PLAN_HOLDS
    + """
local i = ARGV[1]
if not plan_holds() or redis.call('HGET', KEYS[2], 'run:' .. i) ~= ARGV[2] then
  return '-1'
end
redis.call('HSET', KEYS[2], 'done_s:' .. i, ARGV[3])
local total = 0
for j = 0, tonumber(ARGV[4]) - 1 do
  total = total + tonumber(redis.call('HGET', KEYS[2], 'done_s:' .. j) or '0')
end
return tostring(total)
"""
)

# Store a finished chunk while its run holds it, ending the run. KEYS: task hash, chunk hash.
# ARGV: index, attempt, segments (JSON), seconds.
# Returns how many chunks are done, or -1 if the run no longer held it (so one worker only sees the last).
_FINISH = _script(
    _PLAN_HOLDS
    + """
local i = ARGV[1]
if not plan_holds() or redis.call('HGET', KEYS[2], 'run:' .. i) ~= ARGV[2] then
  return -1
end
redis.call('HDEL', KEYS[2], 'run:' .. i)
redis.call('HSET', KEYS[2], 'state:' .. i, '$done', 'segments:' .. i, ARGV[3], 'done_s:' .. i, ARGV[4])
return redis.call('HINCRBY', KEYS[2], 'finished', 1)
"""
)


@dataclass(frozen=True)
class ChunkState:
    """Where one chunk stands; while it is in hand, its run's token is its attempt number."""

    chunk: Chunk
    state: ChunkStatus
    worker: str | None
    attempts: int


@dataclass(frozen=True)
class Split:
    """A split task's chunks, the language they are decoded in, and the run of the task that made the plan."""

    chunks: list[ChunkState]
    language: str
    language_probability: float
    run: int

    @property
    def finished(self) -> int:
        """How many chunks are done."""
        return sum(1 for chunk in self.chunks if chunk.state is ChunkStatus.DONE)


class ChunkStore:
    """The chunks of split tasks, kept as long as their task."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._create = redis.register_script(_CREATE)
        self._claim = redis.register_script(_CLAIM)
        self._progress = redis.register_script(_PROGRESS)
        self._finish = redis.register_script(_FINISH)
        self._take = redis.register_script(_TAKE)

    def create(self, task_id: str, chunks: Sequence[Chunk], language: str, probability: float, run: int) -> bool:
        """Record the plan made by the task's run `run`, every chunk pending; False if that run no longer holds it."""
        fields: dict[str, Any] = {
            "plan": json.dumps([chunk.model_dump() for chunk in chunks]),
            "language": language,
            "language_probability": probability,
            "finished": 0,
        }
        for chunk in chunks:
            fields |= {
                f"state:{chunk.index}": ChunkStatus.PENDING.value,
                f"attempts:{chunk.index}": 0,
                f"done_s:{chunk.index}": 0,
            }
        pairs = [item for pair in fields.items() for item in pair]
        script_keys = [keys.task_key(task_id), keys.chunks_key(task_id)]
        return bool(self._create(keys=script_keys, args=[run, self.ttl_s, *pairs]))

    def load(self, task_id: str) -> Split | None:
        """A task's chunks as they stand; None if it has no plan."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(keys.chunks_key(task_id)))
        if b"plan" not in raw:
            return None
        fields = {key.decode(): value.decode() for key, value in raw.items()}
        chunks = [Chunk.model_validate(item) for item in json.loads(fields["plan"])]
        return Split(
            chunks=[
                ChunkState(
                    chunk=chunk,
                    state=ChunkStatus(fields.get(f"state:{chunk.index}", ChunkStatus.PENDING.value)),
                    worker=fields.get(f"worker:{chunk.index}"),
                    attempts=int(fields.get(f"attempts:{chunk.index}", 0)),
                )
                for chunk in chunks
            ],
            language=fields["language"],
            language_probability=float(fields["language_probability"]),
            run=int(fields.get("run", 0)),
        )

    def take(self, task_id: str, count: int, want: int) -> list[int]:
        """Mark pending chunks queued until `want` are queued or in hand; the indexes to enqueue, in order."""
        taken = self._take(keys=[keys.chunks_key(task_id)], args=[count, max(1, want)])
        return [int(index) for index in taken]

    def claim(self, task_id: str, index: int, worker: str) -> int:
        """Take a queued chunk: its attempt number (the run's token), or 0 if it is not queued or its task ended."""
        return int(self._claim(keys=[keys.task_key(task_id), keys.chunks_key(task_id)], args=[index, worker]))

    def progress(self, task_id: str, index: int, attempt: int, seconds: float, count: int) -> float | None:
        """Record seconds finished in a chunk; the seconds finished over every chunk, None if the run lost it."""
        total = float(
            self._progress(
                keys=[keys.task_key(task_id), keys.chunks_key(task_id)], args=[index, attempt, seconds, count]
            )
        )
        return None if total < 0 else total

    def finish(self, task_id: str, index: int, attempt: int, segments: Sequence[Segment], seconds: float) -> int | None:
        """Store a chunk's segments; how many chunks are now done, None if the run no longer held the chunk."""
        payload = json.dumps([segment.model_dump(mode="json") for segment in segments])
        script_keys = [keys.task_key(task_id), keys.chunks_key(task_id)]
        done = int(self._finish(keys=script_keys, args=[index, attempt, payload, seconds]))
        return None if done < 0 else done

    def requeue(self, task_id: str, index: int, attempt: int, push: Callable[[Pipeline], object]) -> bool:
        """End the chunk's run `attempt` and queue the chunk again, with `push` adding its job, in one transaction.

        Applies only while that run holds the chunk, so of several janitors one wins; False otherwise.
        """
        key = keys.chunks_key(task_id)
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)  # type: ignore[no-untyped-call]  # redis-py leaves `watch` untyped
                state, run = cast(list[bytes | None], pipe.hmget(key, f"state:{index}", f"run:{index}"))
                if state != ChunkStatus.PROCESSING.value.encode() or run != str(attempt).encode():
                    return False
                pipe.multi()
                pipe.hset(key, mapping={f"state:{index}": ChunkStatus.QUEUED.value, f"done_s:{index}": 0})
                pipe.hdel(key, f"run:{index}", f"worker:{index}")
                push(pipe)
                pipe.execute()
            except WatchError:
                return False
        return True

    def segments(self, task_id: str, chunks: Sequence[Chunk]) -> Iterator[tuple[Chunk, list[Segment]]]:
        """The stored segments of finished chunks, in chunk order, read one chunk at a time (the stored JSON of a
        two-hour file's chunks is never all in memory beside its segments)."""
        for chunk in chunks:
            raw = self.redis.hget(keys.chunks_key(task_id), f"segments:{chunk.index}")
            if raw is not None:
                yield chunk, _SEGMENTS.validate_json(cast(bytes, raw))

    def count(self, task_id: str) -> int:
        """How many chunks a task's plan has; 0 if it has none."""
        plan = cast(bytes | None, self.redis.hget(keys.chunks_key(task_id), "plan"))
        return len(json.loads(plan)) if plan else 0

    def delete(self, task_id: str) -> None:
        """Forget a task's chunks."""
        self.redis.delete(keys.chunks_key(task_id))

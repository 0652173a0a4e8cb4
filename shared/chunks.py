"""Chunks of long files: the only code that reads and writes a split task's chunk hash.

One hash per split task holds the plan (the chunks' places on the timeline, `chunk:<index>`, and how many
there are), the language every chunk is decoded in, the run of the task that made the plan, whether the plan is
closed (the split has cut its last chunk) and the file's duration once it is, and per chunk its state (a
`ChunkStatus`), worker, attempts, seconds finished and, once done, its segments on the original timeline. A chunk
in hand carries its run's token (`run:<index>`, its attempt number): a worker's writes for the chunk count only
while its run holds it, and the plan counts only while the run that made it holds the task.

The plan is opened with its first chunks, so they are decoded while the split goes on; it grows as the split cuts
more, and is closed once the split reaches the end. The task is done when the plan is closed and every chunk is
done: whichever comes last, the close or the last chunk's finish, is told so (once), and stitches the result.

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


# Open a plan made by the task's run `run`, while that run still holds the task, replacing any earlier plan.
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

# The split's own writes count while its run holds the task and the plan is that run's, still open.
_SPLIT_HOLDS = """
local function split_holds()
  return redis.call('HGET', KEYS[1], 'status') == '$task_processing' and redis.call('HGET', KEYS[1], 'run') == ARGV[1]
    and redis.call('HGET', KEYS[2], 'run') == ARGV[1] and redis.call('HGET', KEYS[2], 'closed') == '0'
end
"""

# Add chunks to an open plan. KEYS: task hash, chunk hash. ARGV: run, index of the first, count after, field, value,
# ... Returns 1, or 0 if the split no longer holds the plan (or the chunks were added already).
_APPEND = _script(
    _SPLIT_HOLDS
    + """
if not split_holds() or redis.call('HGET', KEYS[2], 'count') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], 'count', ARGV[3], unpack(ARGV, 4))
return 1
"""
)

# Close a plan: no more chunks come. KEYS: task hash, chunk hash. ARGV: run, the file's duration (s).
# Returns 1 if every chunk is done already (the closer stitches), 0 if not, -1 if the split no longer holds it.
_CLOSE = _script(
    _SPLIT_HOLDS
    + """
if not split_holds() then return -1 end
redis.call('HSET', KEYS[2], 'closed', '1', 'duration', ARGV[2])
if redis.call('HGET', KEYS[2], 'finished') == redis.call('HGET', KEYS[2], 'count') then return 1 end
return 0
"""
)

# Move pending chunks to queued, first ones first, until `want` are queued or in hand.
# KEYS: chunk hash. ARGV: want. Returns the indexes now queued (for the caller to enqueue).
_TAKE = _script("""
local inflight, pending = 0, {}
for j = 0, tonumber(redis.call('HGET', KEYS[1], 'count') or '0') - 1 do
  local state = redis.call('HGET', KEYS[1], 'state:' .. j)
  if state == '$queued' or state == '$processing' then
    inflight = inflight + 1
  elseif state == '$pending' then
    table.insert(pending, j)
  end
end
local taken = {}
for k = 1, math.min(#pending, tonumber(ARGV[1]) - inflight) do
  redis.call('HSET', KEYS[1], 'state:' .. pending[k], '$queued')
  table.insert(taken, pending[k])
end
return taken
""")

# Count one more stitch queued for a split task whose plan is there. KEYS: chunk hash. Returns the count, 0 if none.
_STITCHED = """
if redis.call('HEXISTS', KEYS[1], 'count') == 0 then
  return 0
end
return redis.call('HINCRBY', KEYS[1], 'stitches', 1)
"""

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
# KEYS: task hash, chunk hash. ARGV: index, attempt, seconds. Returns -1 if the run no longer holds it.
_PROGRESS = _script(
    _PLAN_HOLDS
    + """
local i = ARGV[1]
if not plan_holds() or redis.call('HGET', KEYS[2], 'run:' .. i) ~= ARGV[2] then
  return '-1'
end
redis.call('HSET', KEYS[2], 'done_s:' .. i, ARGV[3])
local total = 0
for j = 0, tonumber(redis.call('HGET', KEYS[2], 'count')) - 1 do
  total = total + tonumber(redis.call('HGET', KEYS[2], 'done_s:' .. j) or '0')
end
return tostring(total)
"""
)

# Store a finished chunk while its run holds it, ending the run. KEYS: task hash, chunk hash.
# ARGV: index, attempt, segments (JSON), seconds.
# Returns 1 if that was the last chunk of a closed plan (the finisher stitches), 0 if not, -1 if the run no longer
# held it; so of the close and the finishes, one only is told the task is done.
_FINISH = _script(
    _PLAN_HOLDS
    + """
local i = ARGV[1]
if not plan_holds() or redis.call('HGET', KEYS[2], 'run:' .. i) ~= ARGV[2] then
  return -1
end
redis.call('HDEL', KEYS[2], 'run:' .. i)
redis.call('HSET', KEYS[2], 'state:' .. i, '$done', 'segments:' .. i, ARGV[3], 'done_s:' .. i, ARGV[4])
local finished = redis.call('HINCRBY', KEYS[2], 'finished', 1)
if redis.call('HGET', KEYS[2], 'closed') == '1' and tostring(finished) == redis.call('HGET', KEYS[2], 'count') then
  return 1
end
return 0
"""
)


def _pending(chunks: Sequence[Chunk]) -> dict[str, Any]:
    """The fields of new chunks: each one's place, pending, no attempts yet."""
    fields: dict[str, Any] = {}
    for chunk in chunks:
        index = chunk.index
        fields |= {f"chunk:{index}": chunk.model_dump_json(), f"state:{index}": ChunkStatus.PENDING.value}
        fields |= {f"attempts:{index}": 0, f"done_s:{index}": 0}
    return fields


@dataclass(frozen=True)
class ChunkState:
    """Where one chunk stands; while it is in hand, its run's token is its attempt number."""

    chunk: Chunk
    state: ChunkStatus
    worker: str | None
    attempts: int


@dataclass(frozen=True)
class Split:
    """A split task's chunks so far, the language they are decoded in, the run of the task that made the plan, and,
    once the split has cut the last chunk, the file's duration (None while the plan is open)."""

    chunks: list[ChunkState]
    language: str
    language_probability: float
    run: int
    duration: float | None = None

    @property
    def finished(self) -> int:
        """How many chunks are done."""
        return sum(1 for chunk in self.chunks if chunk.state is ChunkStatus.DONE)

    @property
    def complete(self) -> bool:
        """True once the plan is closed and every chunk is done."""
        return self.duration is not None and self.finished == len(self.chunks)


class ChunkStore:
    """The chunks of split tasks, kept as long as their task."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._create = redis.register_script(_CREATE)
        self._append = redis.register_script(_APPEND)
        self._close = redis.register_script(_CLOSE)
        self._claim = redis.register_script(_CLAIM)
        self._progress = redis.register_script(_PROGRESS)
        self._finish = redis.register_script(_FINISH)
        self._take = redis.register_script(_TAKE)
        self._stitched = redis.register_script(_STITCHED)

    def create(self, task_id: str, chunks: Sequence[Chunk], language: str, probability: float, run: int) -> bool:
        """Open a plan made by the task's run `run` with its first chunks, pending; False if that run no longer
        holds the task."""
        fields: dict[str, Any] = {"language": language, "language_probability": probability, "finished": 0}
        fields |= {"closed": 0, "count": len(chunks), **_pending(chunks)}
        pairs = [item for pair in fields.items() for item in pair]
        script_keys = [keys.task_key(task_id), keys.chunks_key(task_id)]
        return bool(self._create(keys=script_keys, args=[run, self.ttl_s, *pairs]))

    def append(self, task_id: str, chunks: Sequence[Chunk], run: int) -> bool:
        """Add the next chunks, pending, to the open plan of run `run`; False if it no longer holds it."""
        if not chunks:
            return True
        first = chunks[0].index
        pairs = [item for pair in _pending(chunks).items() for item in pair]
        script_keys = [keys.task_key(task_id), keys.chunks_key(task_id)]
        return bool(self._append(keys=script_keys, args=[run, first, first + len(chunks), *pairs]))

    def close(self, task_id: str, run: int, duration: float) -> bool | None:
        """Close the open plan of run `run`, the file being `duration` seconds: True if every chunk is done already
        (the caller stitches), False if not, None if the run no longer holds the plan."""
        done = int(self._close(keys=[keys.task_key(task_id), keys.chunks_key(task_id)], args=[run, duration]))
        return None if done < 0 else bool(done)

    def load(self, task_id: str) -> Split | None:
        """A task's chunks as they stand; None if it has no plan."""
        raw = cast(dict[bytes, bytes], self.redis.hgetall(keys.chunks_key(task_id)))
        if b"count" not in raw:
            return None
        fields = {key.decode(): value.decode() for key, value in raw.items()}
        chunks = [Chunk.model_validate_json(fields[f"chunk:{index}"]) for index in range(int(fields["count"]))]
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
            duration=float(fields["duration"]) if fields.get("closed") == "1" else None,
        )

    def take(self, task_id: str, want: int) -> list[int]:
        """Mark pending chunks queued until `want` are queued or in hand; the indexes to enqueue, in order."""
        taken = self._take(keys=[keys.chunks_key(task_id)], args=[max(1, want)])
        return [int(index) for index in taken]

    def claim(self, task_id: str, index: int, worker: str) -> int:
        """Take a queued chunk: its attempt number (the run's token), or 0 if it is not queued or its task ended."""
        return int(self._claim(keys=[keys.task_key(task_id), keys.chunks_key(task_id)], args=[index, worker]))

    def progress(self, task_id: str, index: int, attempt: int, seconds: float) -> float | None:
        """Record seconds finished in a chunk; the seconds finished over every chunk, None if the run lost it."""
        script_keys = [keys.task_key(task_id), keys.chunks_key(task_id)]
        total = float(self._progress(keys=script_keys, args=[index, attempt, seconds]))
        return None if total < 0 else total

    def finish(
        self, task_id: str, index: int, attempt: int, segments: Sequence[Segment], seconds: float
    ) -> bool | None:
        """Store a chunk's segments: True if that completed the closed plan (the caller stitches), False if not, None
        if the run no longer held the chunk."""
        payload = json.dumps([segment.model_dump(mode="json") for segment in segments])
        script_keys = [keys.task_key(task_id), keys.chunks_key(task_id)]
        done = int(self._finish(keys=script_keys, args=[index, attempt, payload, seconds]))
        return None if done < 0 else bool(done)

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

    def stitch_queued(self, task_id: str) -> int:
        """Count a stitch queued for the task after its last chunk's worker was lost: how many have been, 0 if the
        task has no plan (it ended meanwhile)."""
        return int(self._stitched(keys=[keys.chunks_key(task_id)]))

    def segments(self, task_id: str, chunks: Sequence[Chunk]) -> Iterator[tuple[Chunk, list[Segment]]]:
        """The stored segments of finished chunks, in chunk order, read one chunk at a time (the stored JSON of a
        two-hour file's chunks is never all in memory beside its segments)."""
        for chunk in chunks:
            raw = self.redis.hget(keys.chunks_key(task_id), f"segments:{chunk.index}")
            if raw is not None:
                yield chunk, _SEGMENTS.validate_json(cast(bytes, raw))

    def count(self, task_id: str) -> int:
        """How many chunks a task's plan has so far; 0 if it has none."""
        return int(cast(bytes | None, self.redis.hget(keys.chunks_key(task_id), "count")) or 0)

    def delete(self, task_id: str) -> None:
        """Forget a task's chunks."""
        self.redis.delete(keys.chunks_key(task_id))

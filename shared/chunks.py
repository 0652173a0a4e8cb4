"""Chunks of long files: the only code that reads and writes a split task's chunk hash.

One hash per split task holds the plan (the chunks' places on the timeline), the language every
chunk is decoded in, and per chunk its state (a `ChunkStatus`), worker,
attempts, seconds finished and, once done, its segments on the original timeline.

A task keeps only as many chunks on the queue or in hand as there are workers for its model; the
others stay pending and are queued as chunks finish, at the back of the queue, so tasks sent after a
long file of the same priority wait for one chunk, not for the whole file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from string import Template
from typing import Any, cast

from redis import Redis

from shared import keys
from shared.enums import ChunkStatus, TaskStatus
from shared.schemas import Chunk, Segment


def _script(source: str) -> str:
    """A Lua script with the chunk states (and the task status it checks) taken from the enums."""
    states = {state.name.lower(): state.value for state in ChunkStatus}
    return Template(source).substitute(states, task_processing=TaskStatus.PROCESSING.value)


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

# Take a chunk for a worker: only while its task is processing and the chunk is not done.
# KEYS: task hash, chunk hash. ARGV: index, worker. Returns the attempt number, or 0.
_CLAIM = _script("""
if redis.call('HGET', KEYS[1], 'status') ~= '$task_processing' then return 0 end
local i = ARGV[1]
local state = redis.call('HGET', KEYS[2], 'state:' .. i)
if not state or state == '$done' or state == '$pending' then return 0 end
local attempt = redis.call('HINCRBY', KEYS[2], 'attempts:' .. i, 1)
redis.call('HSET', KEYS[2], 'state:' .. i, '$processing', 'worker:' .. i, ARGV[2], 'done_s:' .. i, 0)
return attempt
""")

# Record seconds finished in a chunk still held by this worker; returns the seconds finished over all chunks.
# KEYS: task hash, chunk hash. ARGV: index, worker, seconds, chunk count. Returns -1 if the chunk is no longer ours.
_PROGRESS = _script("""
if redis.call('HGET', KEYS[1], 'status') ~= '$task_processing' then return '-1' end
local i = ARGV[1]
if redis.call('HGET', KEYS[2], 'worker:' .. i) ~= ARGV[2]
    or redis.call('HGET', KEYS[2], 'state:' .. i) ~= '$processing' then
  return '-1'
end
redis.call('HSET', KEYS[2], 'done_s:' .. i, ARGV[3])
local total = 0
for j = 0, tonumber(ARGV[4]) - 1 do
  total = total + tonumber(redis.call('HGET', KEYS[2], 'done_s:' .. j) or '0')
end
return tostring(total)
""")

# Store a finished chunk held by this worker. KEYS: chunk hash. ARGV: index, worker, segments (JSON), seconds.
# Returns how many chunks are done, or -1 if the chunk was not ours to finish (so one worker only sees the last).
_FINISH = _script("""
local i = ARGV[1]
if redis.call('HGET', KEYS[1], 'worker:' .. i) ~= ARGV[2]
    or redis.call('HGET', KEYS[1], 'state:' .. i) ~= '$processing' then
  return -1
end
redis.call('HSET', KEYS[1], 'state:' .. i, '$done', 'segments:' .. i, ARGV[3], 'done_s:' .. i, ARGV[4])
return redis.call('HINCRBY', KEYS[1], 'finished', 1)
""")

# Give a chunk back to the queue, if it is still the given worker's. KEYS: chunk hash. ARGV: index, worker.
_RELEASE = _script("""
local i = ARGV[1]
if redis.call('HGET', KEYS[1], 'worker:' .. i) ~= ARGV[2]
    or redis.call('HGET', KEYS[1], 'state:' .. i) ~= '$processing' then
  return 0
end
redis.call('HSET', KEYS[1], 'state:' .. i, '$queued', 'done_s:' .. i, 0)
return 1
""")


@dataclass(frozen=True)
class ChunkState:
    """Where one chunk stands."""

    chunk: Chunk
    state: ChunkStatus
    worker: str | None
    attempts: int


@dataclass(frozen=True)
class Split:
    """A split task's chunks and the language they are decoded in."""

    chunks: list[ChunkState]
    language: str
    language_probability: float

    @property
    def finished(self) -> int:
        """How many chunks are done."""
        return sum(1 for chunk in self.chunks if chunk.state is ChunkStatus.DONE)


class ChunkStore:
    """The chunks of split tasks, kept as long as their task."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._claim = redis.register_script(_CLAIM)
        self._progress = redis.register_script(_PROGRESS)
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)
        self._take = redis.register_script(_TAKE)

    def create(self, task_id: str, chunks: Sequence[Chunk], language: str, probability: float) -> None:
        """Record a task's plan, every chunk pending, replacing any earlier plan."""
        key = keys.chunks_key(task_id)
        fields: dict[Any, Any] = {
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
        pipe = self.redis.pipeline()
        pipe.delete(key)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.ttl_s)
        pipe.execute()

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
        )

    def take(self, task_id: str, count: int, want: int) -> list[int]:
        """Mark pending chunks queued until `want` are queued or in hand; the indexes to enqueue, in order."""
        taken = self._take(keys=[keys.chunks_key(task_id)], args=[count, max(1, want)])
        return [int(index) for index in taken]

    def claim(self, task_id: str, index: int, worker: str) -> int:
        """Take a chunk; its attempt number, or 0 if its task is not processing or the chunk is done."""
        return int(self._claim(keys=[keys.task_key(task_id), keys.chunks_key(task_id)], args=[index, worker]))

    def progress(self, task_id: str, index: int, worker: str, seconds: float, count: int) -> float | None:
        """Record seconds finished in a chunk; the seconds finished over every chunk, None if the chunk is lost."""
        total = float(
            self._progress(
                keys=[keys.task_key(task_id), keys.chunks_key(task_id)], args=[index, worker, seconds, count]
            )
        )
        return None if total < 0 else total

    def finish(self, task_id: str, index: int, worker: str, segments: Sequence[Segment], seconds: float) -> int | None:
        """Store a chunk's segments; how many chunks are now done, None if the chunk was no longer ours."""
        payload = json.dumps([segment.model_dump(mode="json") for segment in segments])
        done = int(self._finish(keys=[keys.chunks_key(task_id)], args=[index, worker, payload, seconds]))
        return None if done < 0 else done

    def release(self, task_id: str, index: int, worker: str) -> bool:
        """Put a chunk held by `worker` back to queued (its worker died or stopped); False if it was not held so."""
        return bool(self._release(keys=[keys.chunks_key(task_id)], args=[index, worker]))

    def segments(self, task_id: str, chunks: Sequence[Chunk]) -> list[tuple[Chunk, list[Segment]]]:
        """The stored segments of finished chunks, in chunk order."""
        pipe = self.redis.pipeline()
        for chunk in chunks:
            pipe.hget(keys.chunks_key(task_id), f"segments:{chunk.index}")
        parts = []
        for chunk, raw in zip(chunks, pipe.execute(), strict=True):
            if raw is not None:
                parts.append((chunk, [Segment.model_validate(item) for item in json.loads(raw)]))
        return parts

    def count(self, task_id: str) -> int:
        """How many chunks a task's plan has; 0 if it has none."""
        plan = cast(bytes | None, self.redis.hget(keys.chunks_key(task_id), "plan"))
        return len(json.loads(plan)) if plan else 0

    def delete(self, task_id: str) -> None:
        """Forget a task's chunks."""
        self.redis.delete(keys.chunks_key(task_id))

"""A task's live events: a Redis stream read by the server-sent-events route.

Workers append progress with each decoded segment; the task store appends each status change itself, in the
same step as the change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from string import Template
from typing import Any, cast

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.client import Pipeline

from shared import fencing, keys
from shared.enums import FINISHED_STATUSES
from shared.fencing import LUA_FENCED, Fence

MAX_EVENTS = 2000

# Append an event while its task exists and has not finished, and while every fence holds (a worker's run), so an
# event never re-creates the stream of a deleted task; the stream expires with its task.
# KEYS: task hash, stream, fence keys... ARGV: fence count, fence field and token pairs..., event field, value, ...
_ADD = Template("""
$fenced
local finished = $finished
local status = redis.call('HGET', KEYS[1], 'status')
local count = tonumber(ARGV[1])
if not status or finished[status] or not fenced(3, 2, count) then
  return 0
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', $max_events, '*', unpack(ARGV, 2 + 2 * count))
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
""").substitute(fenced=LUA_FENCED, finished=FINISHED_STATUSES, max_events=MAX_EVENTS)


class EventLog:
    """The event streams of tasks, kept (approximately) to their last MAX_EVENTS entries."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._add = redis.register_script(_ADD)

    def add(self, task_id: str, event: Mapping[str, str], fences: Sequence[Fence] = ()) -> bool:
        """Append an event (progress, a decoded segment) to an active task's stream, while every fence holds."""
        fence_keys, fence_args = fencing.script_args(fences)
        pairs = [item for pair in event.items() for item in pair]
        script_keys = [keys.task_key(task_id), keys.events_key(task_id), *fence_keys]
        return bool(self._add(keys=script_keys, args=[len(fences), *fence_args, *pairs]))

    def after(self, task_id: str, last_id: str) -> list[tuple[str, dict[str, str]]]:
        """The task's events after `last_id` ("0" for all), oldest first."""
        entries = cast(
            list[Any], self.redis.xrange(keys.events_key(task_id), min=f"({last_id}" if last_id != "0" else "-")
        )
        return [(raw_id.decode(), {k.decode(): v.decode() for k, v in fields.items()}) for raw_id, fields in entries]

    def delete(self, task_id: str, pipe: Pipeline) -> None:
        """Drop a task's stream inside the caller's transaction."""
        pipe.delete(keys.events_key(task_id))


async def wait_after(redis: AsyncRedis, task_id: str, last_id: str, timeout_s: float) -> bool:
    """Wait until the task's stream has an event after `last_id`, or `timeout_s` passes; True if one came.

    A blocking XREAD on the async client: the waiting request holds a Redis connection, but no thread, and the event
    loop serves other requests meanwhile.
    """
    block_ms = max(1, round(timeout_s * 1000))  # 0 would block for ever
    return bool(await redis.xread({keys.events_key(task_id): last_id}, count=1, block=block_ms))

"""The callback queue: finished tasks whose completion notice is due, leased to one deliverer at a time.

The task store puts a task on the queue in the same step as its final status; from there on this module owns
the queue, the leases and the log of delivery attempts.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from redis import Redis
from redis.client import Pipeline

from shared import keys
from shared.clock import to_ms, utcnow
from shared.enums import CallbackStatus
from shared.schemas import Delivery

# Take the first due callback and lease it, so one worker delivers it at a time.
# KEYS: due, leased. ARGV: lease length (ms). Returns the task id, or nothing.
_CLAIM = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms, 'LIMIT', 0, 1)
if #due == 0 then return false end
redis.call('ZREM', KEYS[1], due[1])
redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[1]), due[1])
return due[1]
"""

# Record one delivery attempt and its outcome, and give up the lease; a retry goes back on the queue.
# KEYS: task, deliveries, due, leased. ARGV: task id, attempt (JSON), callback status, retry at (ms) or '', TTL (s).
_RECORD = """
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('HINCRBY', KEYS[1], 'callback_attempts', 1)
redis.call('HSET', KEYS[1], 'callback_status', ARGV[3])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
return 1
"""

# Leases that ran out (their worker died mid-delivery) go back on the callback queue.
# KEYS: leased, due.
_RELEASE_LEASES = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ms, id)
end
return #expired
"""


class CallbackQueue:
    """Due callbacks, their leases and their delivery attempts, kept as long as their task."""

    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._claim = redis.register_script(_CLAIM)
        self._record = redis.register_script(_RECORD)
        self._release_leases = redis.register_script(_RELEASE_LEASES)

    def schedule(self, task_id: str) -> None:
        """Put a finished task's callback on the queue again, with a fresh series of attempts."""
        pipe = self.redis.pipeline()
        pipe.hset(
            keys.task_key(task_id), mapping={"callback_status": CallbackStatus.PENDING.value, "callback_attempts": 0}
        )
        pipe.zadd(keys.callbacks_due_key(), {task_id: to_ms(utcnow())})
        pipe.execute()

    def claim(self, lease_s: float) -> str | None:
        """The id of a task whose callback is due, leased to the caller for `lease_s`; None if none is due."""
        claimed = self._claim(keys=[keys.callbacks_due_key(), keys.callbacks_leased_key()], args=[int(lease_s * 1000)])
        return claimed.decode() if claimed else None

    def record(self, task_id: str, attempt: Delivery, status: CallbackStatus, retry_at: datetime | None) -> None:
        """Log one attempt, set where the callback stands, and queue the retry if there is one."""
        self._record(
            keys=[
                keys.task_key(task_id),
                keys.deliveries_key(task_id),
                keys.callbacks_due_key(),
                keys.callbacks_leased_key(),
            ],
            args=[task_id, attempt.model_dump_json(), status.value, to_ms(retry_at) if retry_at else "", self.ttl_s],
        )

    def release_expired_leases(self) -> int:
        """Return callbacks whose deliverer died to the queue; how many."""
        return int(self._release_leases(keys=[keys.callbacks_leased_key(), keys.callbacks_due_key()]))

    def deliveries(self, task_id: str) -> list[Delivery]:
        """Every callback attempt of a task, oldest first."""
        raw = cast(list[bytes], self.redis.lrange(keys.deliveries_key(task_id), 0, -1))
        return [Delivery.model_validate_json(item) for item in raw]

    def delete(self, task_id: str, pipe: Pipeline) -> None:
        """Forget a task's callback and its attempts inside the caller's transaction."""
        pipe.delete(keys.deliveries_key(task_id))
        pipe.zrem(keys.callbacks_due_key(), task_id)
        pipe.zrem(keys.callbacks_leased_key(), task_id)

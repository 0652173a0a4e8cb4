"""The callback queue: finished tasks whose completion notice is due, leased to one deliverer at a time.

The task store puts a task on the queue in the same step as its final status; from there on this module owns
the queue, the leases, the log of delivery attempts and their retries, and the secret each task is signed with.
An attempt whose lease lapses (its deliverer died or stalled) counts as a failed one, so a receiver that holds
every deliverer ends as failed after the attempt limit instead of being tried forever.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from string import Template
from typing import cast

from redis import Redis
from redis.client import Pipeline

from shared import keys, metrics
from shared.clock import utcnow
from shared.enums import CallbackStatus
from shared.schemas import Delivery
from shared.settings import Settings

# A lease outlasts the delivery deadline by this much, for the Redis round trips around the delivery.
LEASE_MARGIN_S = 30

# Where a callback stands after attempt `n`: delivered; retried after a doubling, jittered delay while
# attempts are left; else failed. Outcome: 'delivered', 'retry' or 'final'. Returns the status.
_SETTLE = Template("""
local function settle(task, due, id, n, outcome, max_attempts, backoff_ms, jitter)
  local status = '$failed'
  if outcome == 'delivered' then
    status = '$delivered'
  elseif outcome == 'retry' and n < max_attempts then
    status = '$pending'
    local now = redis.call('TIME')
    local ms = now[1] * 1000 + math.floor(now[2] / 1000)
    redis.call('ZADD', due, ms + math.floor(backoff_ms * 2 ^ (n - 1) * jitter), id)
  end
  redis.call('HSET', task, 'callback_status', status)
  return status
end
""").substitute(
    failed=CallbackStatus.FAILED.value, delivered=CallbackStatus.DELIVERED.value, pending=CallbackStatus.PENDING.value
)

# Take the first due callback and lease it, so one worker delivers it at a time.
# KEYS: due, leased. ARGV: lease length (ms). Returns the task id and the lease's end (ms), or nothing.
_CLAIM = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ms, 'LIMIT', 0, 1)
if #due == 0 then return false end
local ends = ms + tonumber(ARGV[1])
redis.call('ZREM', KEYS[1], due[1])
redis.call('ZADD', KEYS[2], ends, due[1])
return {due[1], ends}
"""

# Record one delivery attempt and settle the callback, if the caller's lease is still the current one (a lease
# that lapsed was counted already, and the callback may be another deliverer's now).
# KEYS: task, deliveries, due, leased. ARGV: task id, attempt (JSON), outcome, lease end (ms), max attempts,
# first backoff (ms), jitter factor, TTL (s). Returns the attempt number and the status, or nothing.
_RECORD = (
    _SETTLE
    + """
local lease = redis.call('ZSCORE', KEYS[4], ARGV[1])
if not lease or tonumber(lease) ~= tonumber(ARGV[4]) then return false end
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[8])
local n = redis.call('HINCRBY', KEYS[1], 'callback_attempts', 1)
return {n, settle(KEYS[1], KEYS[3], ARGV[1], n, ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))}
"""
)

# A lease that ran out is a failed attempt: logged as one (named after the task's status) and settled like one.
# KEYS: leased, task, deliveries, due. ARGV: task id, attempt (JSON, without its event), max attempts,
# first backoff (ms), jitter factor, TTL (s). Returns 1 if the lease had lapsed.
_LAPSE = (
    _SETTLE
    + """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not ends or tonumber(ends) > ms then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
local status = redis.call('HGET', KEYS[2], 'status')
if not status then return 1 end
local attempt = cjson.decode(ARGV[2])
attempt['event'] = 'task.' .. status
redis.call('RPUSH', KEYS[3], cjson.encode(attempt))
redis.call('EXPIRE', KEYS[3], ARGV[6])
local n = redis.call('HINCRBY', KEYS[2], 'callback_attempts', 1)
settle(KEYS[2], KEYS[4], ARGV[1], n, 'retry', tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]))
return 1
"""
)


@dataclass(frozen=True)
class Retries:
    """Attempts of one callback, the first retry delay (it doubles each time, ±50%), and one attempt's lease."""

    max_attempts: int
    backoff_s: float
    lease_s: float

    @classmethod
    def of(cls, settings: Settings) -> Retries:
        """The retries the settings ask for; a lease outlasts the delivery deadline by LEASE_MARGIN_S."""
        return cls(
            settings.callback_max_attempts, settings.callback_backoff_s, settings.callback_timeout_s + LEASE_MARGIN_S
        )

    def args(self) -> list[int | float]:
        """Attempt limit, first delay (ms) and a fresh jitter factor, as the Lua scripts take them."""
        return [self.max_attempts, round(self.backoff_s * 1000), random.uniform(0.5, 1.5)]


@dataclass(frozen=True)
class Lease:
    """One claim of a task's callback; the lease's end (ms) tells it from a later claim of the same callback."""

    task_id: str
    ends_ms: int


class CallbackQueue:
    """Due callbacks, their leases, their delivery attempts and signing secrets, kept as long as their task."""

    def __init__(self, redis: Redis, ttl_s: int, retries: Retries) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self.retries = retries
        self._claim = redis.register_script(_CLAIM)
        self._record = redis.register_script(_RECORD)
        self._lapse = redis.register_script(_LAPSE)

    def sign_with(self, task_id: str, secret: str, pipe: Pipeline) -> None:
        """Record, inside the submission's transaction, the secret that signs this task's callbacks."""
        pipe.set(keys.callback_secret_key(task_id), secret, ex=self.ttl_s)

    def signing_secret(self, task_id: str) -> str | None:
        """The secret recorded for a task at submission, if any."""
        secret = cast(bytes | None, self.redis.get(keys.callback_secret_key(task_id)))
        return secret.decode() if secret else None

    def claim(self, lease_s: float | None = None) -> Lease | None:
        """A due callback, leased to the caller (for the retries' lease unless `lease_s`); None if none is due."""
        lease_ms = round((self.retries.lease_s if lease_s is None else lease_s) * 1000)
        claimed = self._claim(keys=[keys.callbacks_due_key(), keys.callbacks_leased_key()], args=[lease_ms])
        return Lease(claimed[0].decode(), int(claimed[1])) if claimed else None

    def record(self, lease: Lease, attempt: Delivery, retry: bool) -> tuple[int, CallbackStatus] | None:
        """Log one attempt and settle the callback: delivered, retried later if `retry` and attempts are left, or
        failed. The attempt's number and the status; None if the lease had lapsed and was counted already."""
        outcome = "delivered" if attempt.error is None else "retry" if retry else "final"
        settled = self._record(
            keys=[
                keys.task_key(lease.task_id),
                keys.deliveries_key(lease.task_id),
                keys.callbacks_due_key(),
                keys.callbacks_leased_key(),
            ],
            args=[lease.task_id, attempt.model_dump_json(), outcome, lease.ends_ms, *self.retries.args(), self.ttl_s],
        )
        return (int(settled[0]), CallbackStatus(settled[1].decode())) if settled else None

    def release_expired_leases(self) -> int:
        """Count every lapsed lease (its deliverer died or stalled) as a failed attempt; how many lapsed."""
        leased = cast(list[bytes], self.redis.zrange(keys.callbacks_leased_key(), 0, -1))
        lapsed = sum(self._count_lapse(raw.decode()) for raw in leased)
        if lapsed:
            metrics.count(self.redis, "callbacks", "lease_lapsed", lapsed)
        return lapsed

    def _count_lapse(self, task_id: str) -> int:
        attempt = Delivery(
            at=utcnow(),
            event="",
            status_code=None,
            error="no answer was recorded before the lease ran out: the worker delivering it died or stalled",
            duration_ms=round(self.retries.lease_s * 1000),
        )
        task_keys = [
            keys.callbacks_leased_key(),
            keys.task_key(task_id),
            keys.deliveries_key(task_id),
            keys.callbacks_due_key(),
        ]
        return int(
            self._lapse(keys=task_keys, args=[task_id, attempt.model_dump_json(), *self.retries.args(), self.ttl_s])
        )

    def deliveries(self, task_id: str) -> list[Delivery]:
        """Every callback attempt of a task, oldest first."""
        raw = cast(list[bytes], self.redis.lrange(keys.deliveries_key(task_id), 0, -1))
        return [Delivery.model_validate_json(item) for item in raw]

    def delete(self, task_id: str, pipe: Pipeline) -> None:
        """Forget a task's callback, its attempts and its secret inside the caller's transaction."""
        pipe.delete(keys.deliveries_key(task_id), keys.callback_secret_key(task_id))
        pipe.zrem(keys.callbacks_due_key(), task_id)
        pipe.zrem(keys.callbacks_leased_key(), task_id)

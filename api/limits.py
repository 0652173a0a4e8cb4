"""Concurrent slots per caller (event streams, summaries in progress), counted in Redis across every API replica."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from redis import Redis

from shared import keys
from shared.errors import TooManyConcurrent

# Drop lapsed slots, then take one if fewer than the limit are held; the set lives as long as its newest slot.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


@dataclass(frozen=True)
class Slot:
    """One held slot; release it when the stream or call ends."""

    redis: Redis
    key: str
    member: str

    def release(self) -> None:
        """Give the slot back."""
        self.redis.zrem(self.key, self.member)


@dataclass(frozen=True)
class Slots:
    """At most `limit` slots of one kind per owner; a slot never given back (its replica died) lapses after `hold_s`."""

    redis: Redis
    kind: str
    limit: int
    hold_s: float

    def take(self, owner: str) -> Slot:
        """A slot for the owner; TooManyConcurrent while it holds `limit` of them."""
        key = keys.slots_key(self.kind, owner)
        now_ms = int(time.time() * 1000)
        hold_ms = int(self.hold_s * 1000)
        member = uuid.uuid4().hex
        taken = self.redis.eval(_TAKE, 1, key, now_ms, self.limit, now_ms + hold_ms, member, hold_ms)
        if not taken:
            raise TooManyConcurrent(f"you have {self.limit} {self.kind} in progress already; try again later", 5)
        return Slot(self.redis, key, member)

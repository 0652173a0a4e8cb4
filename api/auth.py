"""Who is calling: a bearer API key, checked by its hash, with its rate limit; or anonymous where allowed."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from fastapi import Request
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from shared import keys
from shared.errors import RateLimited, Unauthorized
from shared.settings import ANONYMOUS, ApiKey, Settings


@dataclass(frozen=True)
class Caller:
    """The owner name tasks are filed under, and whether it may see everyone's."""

    name: str
    admin: bool = False
    key: ApiKey | None = None

    def may_see(self, owner: str) -> bool:
        """True if a task of this owner is visible to the caller."""
        return self.admin or owner == self.name


def hash_key(key: str) -> str:
    """The SHA-256 an API key is configured by."""
    return hashlib.sha256(key.encode()).hexdigest()


def identify(authorization: str | None, settings: Settings) -> Caller:
    """The caller a request's Authorization header names; Unauthorized for a wrong or missing key."""
    if not settings.api_keys:  # no keys configured: everyone is anonymous, whatever an OpenAI client sends
        return Caller(ANONYMOUS)
    if not authorization:
        if settings.require_api_key:
            raise Unauthorized("send an API key: Authorization: Bearer <key>")
        return Caller(ANONYMOUS)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("use the Bearer scheme: Authorization: Bearer <key>")
    digest = hash_key(token.strip())
    for key in settings.api_keys:
        if key.sha256 == digest:
            return Caller(key.name, key.admin, key)
    raise Unauthorized("the API key is not valid")


def rate_limit(caller: Caller) -> tuple[str, int] | None:
    """The key counting this minute's requests of a rate-limited caller, and its limit; None without a limit."""
    if caller.key is None or caller.key.requests_per_minute is None:
        return None
    return keys.rate_key(caller.name, int(time.time() // 60)), caller.key.requests_per_minute


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        retry_after = 60 - int(time.time()) % 60
        raise RateLimited(f"more than {limit} requests this minute", retry_after)


def check_rate(redis: Redis, caller: Caller) -> None:
    """RateLimited past the key's requests per minute (a fixed one-minute window in Redis)."""
    limit = rate_limit(caller)
    if limit is None:
        return
    counter, most = limit
    pipe = redis.pipeline()
    pipe.incr(counter)
    pipe.expire(counter, 120)
    count, _ = pipe.execute()
    _check_count(int(count), most)


async def check_rate_async(redis: AsyncRedis, caller: Caller) -> None:
    """`check_rate` on the async client."""
    limit = rate_limit(caller)
    if limit is None:
        return
    counter, most = limit
    async with redis.pipeline() as pipe:
        pipe.incr(counter)
        pipe.expire(counter, 120)
        count, _ = await pipe.execute()
    _check_count(int(count), most)


def authenticate(request: Request) -> Caller:
    """The request's caller, within its rate limit (a blocking dependency: FastAPI runs it in a thread)."""
    settings: Settings = request.app.state.settings
    caller = identify(request.headers.get("authorization"), settings)
    check_rate(request.app.state.redis, caller)
    return caller


async def authenticate_async(request: Request) -> Caller:
    """`authenticate` on the event loop, with the async Redis client: no thread hop for each status poll."""
    settings: Settings = request.app.state.settings
    caller = identify(request.headers.get("authorization"), settings)
    await check_rate_async(request.app.state.live_redis, caller)
    return caller

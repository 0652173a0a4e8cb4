"""Redis clients that ride out a Redis restart: workers wait for it, the API answers 503 at once."""

from __future__ import annotations

from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

# Workers retry for about a minute (0.1 s doubling to 8 s), so a restart of Redis fails no job.
PATIENT_RETRIES = 12


def connect(url: str, patient: bool) -> Redis:
    """A client for `url`; a patient one retries with exponential backoff, an impatient one once."""
    retry = Retry(ExponentialBackoff(cap=8, base=0.1), retries=PATIENT_RETRIES if patient else 1)
    return Redis.from_url(
        url,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=2,
        health_check_interval=15,
    )


def connect_async(url: str) -> AsyncRedis:
    """An asyncio client for `url` that, like the API's own, tries once more on a broken connection (a pooled one
    left from before a Redis restart), then fails at once."""
    return AsyncRedis.from_url(
        url,
        retry=AsyncRetry(ExponentialBackoff(cap=8, base=0.1), retries=1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        socket_connect_timeout=2,
        health_check_interval=15,
    )

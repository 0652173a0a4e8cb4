"""Request dependencies, as `Annotated` aliases; everything they hand out is built in the app's lifespan."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Path, Request
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from starlette.datastructures import State

from api.auth import Caller, authenticate_async
from api.polling import RenderCache
from api.service import TaskService
from shared.settings import Settings
from shared.storage import UploadStorage
from shared.stores import Stores


def get_settings(request: Request) -> Settings:
    """The app's settings."""
    settings: Settings = request.app.state.settings
    return settings


def get_redis(request: Request) -> Redis:
    """The shared Redis client."""
    redis: Redis = request.app.state.redis
    return redis


async def get_async_redis(request: Request) -> AsyncRedis:
    """The async Redis client, for waits that must hold no thread (long polls, live sessions)."""
    redis: AsyncRedis = request.app.state.live_redis
    return redis


def get_stores(request: Request) -> Stores:
    """Every store."""
    stores: Stores = request.app.state.stores
    return stores


def get_storage(request: Request) -> UploadStorage:
    """The upload volume."""
    storage: UploadStorage = request.app.state.stores.storage
    return storage


CallerDep = Annotated[Caller, Depends(authenticate_async)]


async def get_tasks(request: Request, caller: CallerDep) -> TaskService:
    """The task service for this request's caller (built on the loop: it blocks on nothing)."""
    return task_service(request.app.state, caller)


def task_service(state: State, caller: Caller) -> TaskService:
    """The task service over the app's clients and stores, for one caller."""
    return TaskService(
        redis=state.redis, stores=state.stores, lifecycle=state.lifecycle, settings=state.settings, caller=caller
    )


def get_renders(request: Request) -> RenderCache:
    """The views of tasks this process has rendered."""
    renders: RenderCache = request.app.state.renders
    return renders


TasksDep = Annotated[TaskService, Depends(get_tasks)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
RedisDep = Annotated[Redis, Depends(get_redis)]
AsyncRedisDep = Annotated[AsyncRedis, Depends(get_async_redis)]
StoresDep = Annotated[Stores, Depends(get_stores)]
StorageDep = Annotated[UploadStorage, Depends(get_storage)]
RendersDep = Annotated[RenderCache, Depends(get_renders)]
TaskId = Annotated[str, Path(description="The task's id. / 任务 ID。", examples=["8c971edd0f4341419dd798788bcb8a53"])]
IdempotencyKey = Annotated[
    str | None,
    Header(
        description="Send a retry with the same key and get the first task back, not a second one. / 幂等键。",
        min_length=1,
        max_length=255,
        pattern=r"^[!-~]+$",
        examples=["order-17-attempt"],
    ),
]

"""Liveness and what the fleet serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import RedisDep
from shared import fleet

router = APIRouter(tags=["health"])


@router.get("/health")
def health(redis: RedisDep) -> dict[str, Any]:
    """Redis reachable, and the live workers with their models. / 健康检查：Redis 状态及在线 worker 和模型。"""
    redis.ping()
    workers = fleet.live_workers(redis)
    return {
        "status": "ok",
        "models": sorted({worker.model for worker in workers}),
        "workers": [worker.model_dump(mode="json") for worker in workers],
    }

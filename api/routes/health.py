"""Liveness and what the fleet serves."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import RedisDep, SettingsDep, StorageDep
from shared import fleet

router = APIRouter(tags=["health"])


@router.get("/health")
def health(redis: RedisDep, settings: SettingsDep, storage: StorageDep) -> dict[str, Any]:
    """Redis reachable, the live workers with their models, configured models no worker serves now, and the upload
    volume's free space (uploads are refused while it is under its reserve).

    健康检查：Redis 状态、在线 worker 及其模型、暂无 worker 的已配置模型、上传存储的剩余空间。
    """
    redis.ping()
    workers = fleet.live_workers(redis)
    served = sorted({worker.model for worker in workers})
    return {
        "status": "ok",
        "models": served,
        "models_without_workers": sorted(set(settings.configured_models) - set(served)),
        "workers": [worker.model_dump(mode="json") for worker in workers],
        "upload_volume": {"free_bytes": storage.free_bytes(), "reserve_bytes": storage.reserve_bytes},
    }

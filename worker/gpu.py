"""One GPU per worker: a lease in Redis over the GPU ids of a host, taken before the engine loads.

Every replica of `docker compose up --scale worker=N` gets the same environment, so each worker claims
a free GPU id of its pool (a host, or anything that names one set of GPUs), keeps the lease fresh while
it lives, gives it back on exit, and loses it within the TTL if it dies. An explicit
CUDA_VISIBLE_DEVICES always wins. With more workers than GPUs the extra ones wait, and say so.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from redis import Redis

from shared import keys
from shared.settings import Settings

log = logging.getLogger(__name__)

# Keep the lease only while it is still ours (a lapsed one may have gone to another worker).
_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def host_gpu_ids(settings: Settings) -> list[str]:
    """The GPU ids to share out: configured, or those the NVIDIA driver lists (without initialising CUDA)."""
    if settings.gpu_id_list is not None:
        return settings.gpu_id_list
    driver = Path("/proc/driver/nvidia/gpus")
    return [str(index) for index in range(len(list(driver.iterdir())))] if driver.is_dir() else []


class GpuLease:
    """This worker's claim on one GPU id of its pool."""

    def __init__(self, redis: Redis, settings: Settings, worker_id: str) -> None:
        self.redis = redis
        self.settings = settings
        self.worker_id = worker_id
        self.gpu: str | None = None
        self._refresh = redis.register_script(_REFRESH)
        self._release = redis.register_script(_RELEASE)

    def acquire(self, stop: threading.Event) -> str | None:
        """Claim a free GPU and pin CUDA to it; None for CPU workers. Waits while every GPU is taken."""
        explicit = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = host_gpu_ids(self.settings)
        if explicit is not None or self.settings.device == "cpu" or not ids:
            return explicit
        waited = False
        while not stop.is_set():
            for gpu in ids:
                if self.redis.set(self._key(gpu), self.worker_id, nx=True, ex=self.settings.worker_ttl_s):
                    self.gpu = gpu
                    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
                    log.info("worker %s claimed GPU %s of pool %s", self.worker_id, gpu, self.settings.gpu_pool)
                    return gpu
            if not waited:
                log.warning(
                    "all %d GPUs of pool %s are taken; waiting for one to come free", len(ids), self.settings.gpu_pool
                )
                waited = True
            stop.wait(self.settings.worker_ttl_s / 5)
        return None

    def refresh(self) -> None:
        """Extend the lease; called from the worker's upkeep thread."""
        if self.gpu is not None:
            self._refresh(keys=[self._key(self.gpu)], args=[self.worker_id, self.settings.worker_ttl_s])

    def release(self) -> None:
        """Give the GPU back as the worker stops."""
        if self.gpu is not None:
            self._release(keys=[self._key(self.gpu)], args=[self.worker_id])
            self.gpu = None

    def _key(self, gpu: str) -> str:
        return keys.gpu_lease_key(self.settings.gpu_pool, gpu)

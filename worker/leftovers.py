"""The volume's leftovers: what processes killed mid-write left there, removed by one worker of the fleet at a time."""

from __future__ import annotations

import logging

from redis import Redis

from shared import keys
from shared.settings import Settings
from shared.storage import UploadStorage

log = logging.getLogger(__name__)

# How often the fleet looks (the first worker to come by in each period does).
EVERY_S = 600
# A partial upload, a download's folder or converted audio not written for this long was left by a killed process:
# while in use they are written to all along (an upload that stalls is dropped after WHISPERQ_UPLOAD_IDLE_S).
STALE_S = 3600.0


class LeftoverSweep:
    """A worker chore: every EVERY_S across the fleet, remove the volume's leftovers."""

    def __init__(self, redis: Redis, storage: UploadStorage, settings: Settings) -> None:
        self.redis = redis
        self.storage = storage
        self.orphaned_s = 2.0 * settings.task_ttl_s  # past any task's life
        self.keep_uploads = settings.keep_uploads

    def __call__(self) -> None:
        if not self.redis.set(keys.leftover_sweep_key(), 1, nx=True, ex=EVERY_S):
            return
        removed = self.storage.remove_leftovers(STALE_S, self.orphaned_s, self.keep_uploads)
        if removed:
            log.warning("removed %d leftovers of killed processes from the volume: %s", len(removed), removed)

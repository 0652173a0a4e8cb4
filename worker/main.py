"""The worker process: load the model once, announce it, take jobs from its queues, highest priority first."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

from redis import Redis
from rq import SimpleWorker

from shared import fleet, keys
from shared.schemas import WorkerInfo
from shared.settings import Settings
from shared.storage import UploadStorage
from shared.store import TaskStore, utcnow
from worker import context
from worker.engine import Engine, load_engine

log = logging.getLogger(__name__)


class Announcer:
    """Keeps this worker's announcement fresh from a background thread while the worker lives."""

    def __init__(self, redis: Redis, info: WorkerInfo, ttl_s: int) -> None:
        self.redis = redis
        self.info = info
        self.ttl_s = ttl_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="announcer", daemon=True)

    def start(self) -> None:
        """Announce now, then every third of the TTL."""
        fleet.announce(self.redis, self.info, self.ttl_s)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing and withdraw the announcement."""
        self._stop.set()
        self._thread.join(timeout=5)
        fleet.withdraw(self.redis, self.info.id)

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                fleet.announce(self.redis, self.info, self.ttl_s)
            except Exception:  # Redis may be briefly away; the next round tries again
                log.warning("could not refresh the worker announcement", exc_info=True)


def worker_info(worker_id: str, engine: Engine) -> WorkerInfo:
    """What this worker tells the fleet about itself."""
    return WorkerInfo(
        id=worker_id,
        model=engine.name,
        device=engine.device,
        compute_type=engine.compute_type,
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=utcnow(),
    )


def run(settings: Settings, burst: bool = False) -> None:
    """Serve jobs until stopped (or, in burst mode, until the queues are empty)."""
    engine = load_engine(settings)
    redis = Redis.from_url(settings.redis_dsn)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    context.install(
        context.WorkerContext(
            worker_id=worker_id,
            settings=settings,
            engine=engine,
            store=TaskStore(redis, settings.task_ttl_s),
            storage=UploadStorage(settings.uploads),
        )
    )
    announcer = Announcer(redis, worker_info(worker_id, engine), settings.worker_ttl_s)
    announcer.start()
    log.info(
        "worker %s serves %s on %s; queues %s", worker_id, engine.name, engine.device, keys.queue_names(engine.name)
    )
    try:
        rq_worker = SimpleWorker(keys.queue_names(engine.name), connection=redis, name=worker_id)
        rq_worker.work(burst=burst, with_scheduler=False, logging_level=settings.log_level.upper())
    finally:
        announcer.stop()

"""The worker process: load the model once, announce it, take jobs from its queues, highest priority first."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from types import FrameType
from typing import Any

from redis import Redis
from rq import SimpleWorker
from rq.worker import WorkerStatus

from shared import fleet, keys
from shared.connection import connect
from shared.errors import TaskNotFound
from shared.recovery import Janitor
from shared.schemas import WorkerInfo
from shared.settings import Settings
from shared.storage import UploadStorage
from shared.store import TaskStore, utcnow
from worker import context
from worker.callbacks import Deliverer
from worker.context import ColdStop
from worker.engine import Engine, load_engine

log = logging.getLogger(__name__)


class Announcer:
    """From a background thread while the worker lives: keep its announcement fresh and sweep for lost tasks."""

    def __init__(self, redis: Redis, info: WorkerInfo, ttl_s: int, janitor: Janitor) -> None:
        self.redis = redis
        self.info = info
        self.ttl_s = ttl_s
        self.janitor = janitor
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
        while True:
            try:
                fleet.announce(self.redis, self.info, self.ttl_s)
                self.janitor.sweep()
            except Exception:  # Redis may be briefly away; the next round tries again
                log.warning("worker upkeep failed; trying again shortly", exc_info=True)
            if self._stop.wait(self.ttl_s / 3):
                return


class Worker(SimpleWorker):
    """RQ's in-process worker, keeping RQ's heartbeats while a long job runs and handing a job back on a cold stop."""

    interrupted: str | None = None

    def execute_job(self, job: Any, queue: Any) -> None:
        execution = self.prepare_execution(job)
        done = threading.Event()
        beats = threading.Thread(target=self._beat, args=(job, execution, done), name="heartbeat", daemon=True)
        beats.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beats.join(timeout=5)
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Any, execution: Any, done: threading.Event) -> None:
        # Without these, RQ would take a job running longer than its worker TTL for abandoned.
        while not done.wait(min(30, self.job_monitoring_interval)):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception:
                log.warning("could not send the job heartbeat", exc_info=True)

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """The second SIGTERM or Ctrl-C: stop at once; the job in hand goes back on its queue."""
        self.interrupted = self.get_current_job_id()
        if self.interrupted is None:
            raise SystemExit()
        log.warning("cold stop: handing task %s back", self.interrupted)
        raise ColdStop()


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
    redis = connect(settings.redis_dsn, patient=True)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    store, storage = TaskStore(redis, settings.task_ttl_s), UploadStorage(settings.uploads)
    context.install(
        context.WorkerContext(worker_id=worker_id, settings=settings, engine=engine, store=store, storage=storage)
    )
    janitor = Janitor(redis, store, storage, settings)
    announcer = Announcer(redis, worker_info(worker_id, engine), settings.worker_ttl_s, janitor)
    announcer.start()
    deliverer = Deliverer(store, settings)
    deliverer.start()
    queue_names = keys.queue_names(engine.name)
    log.info("worker %s serves %s on %s; queues %s", worker_id, engine.name, engine.device, queue_names)
    rq_worker = Worker(queue_names, connection=redis, name=worker_id)
    try:
        rq_worker.work(burst=burst, with_scheduler=False, logging_level=settings.log_level.upper())
    finally:
        deliverer.stop()
        announcer.stop()
        if rq_worker.interrupted:
            _hand_back(store, janitor, rq_worker.interrupted, worker_id)


def _hand_back(store: TaskStore, janitor: Janitor, task_id: str, worker_id: str) -> None:
    try:
        janitor.recover(store.get(task_id), worker_id)
    except TaskNotFound:
        pass

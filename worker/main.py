"""The worker process: load the model once, announce it, take jobs from its queues, highest priority first."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from types import FrameType
from typing import Any

from redis import Redis
from rq import SimpleWorker
from rq.worker import WorkerStatus

from shared import fleet, keys
from shared.clock import utcnow
from shared.connection import connect
from shared.lifecycle import Lifecycle
from shared.schemas import WorkerInfo
from shared.settings import Settings
from shared.stores import Stores
from worker import batching, context, lane, replicas
from worker.callbacks import Deliverer
from worker.control import ColdStop
from worker.copies import Copy
from worker.engine import Engine, load_engine, pick_device
from worker.gpu import GpuLease
from worker.lane import Lane
from worker.leftovers import LeftoverSweep
from worker.live import LiveServer
from worker.recovery import Janitor

log = logging.getLogger(__name__)


class Upkeep:
    """A background thread that does the worker's chores every few seconds while it lives.

    The chores run in order, and one that fails ends its round: the later ones need what it does (no sweep by a
    worker that could not announce itself). After a failed round the next comes within a second, so a worker
    announces itself again as soon as Redis is back.
    """

    def __init__(self, interval_s: float, chores: list[Callable[[], object]], retry_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.retry_s = min(retry_s, interval_s)
        self.chores = chores
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="upkeep", daemon=True)

    def start(self) -> None:
        """Do the chores once now, then every interval."""
        self._round()
        self._thread.start()

    def stop(self) -> None:
        """Stop after the round in progress."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        wait = self.interval_s
        while not self._stop.wait(wait):
            wait = self.interval_s if self._round() else self.retry_s

    def _round(self) -> bool:
        """Do the chores; False if one failed."""
        for chore in self.chores:
            try:
                chore()
            except Exception:  # Redis may be briefly away; the next round tries again
                log.warning("worker upkeep failed; trying again shortly", exc_info=True)
                return False
        return True


class Worker(SimpleWorker):
    """RQ's in-process worker: it says which job it holds, keeps RQ's heartbeats while a long job runs, and hands
    a job back on a cold stop."""

    interrupted: list[str] = []
    presence: fleet.Presence | None = None
    lane: Lane | None = None  # told which queue each job comes from
    replicas: list[Copy] = []  # the main loop's replicas

    @property
    def others(self) -> list[Copy]:
        """The other copies of the model (the replicas, the lane): they stop taking jobs with this one."""
        return [*self.replicas, *([self.lane] if self.lane is not None else [])]

    def execute_job(self, job: Any, queue: Any) -> None:
        if self.presence is not None:
            self.presence.hold(job.id)
        if self.lane is not None:
            self.lane.follow(queue.name)
        execution = self.prepare_execution(job)
        done = threading.Event()
        beats = threading.Thread(target=self._beat, args=(job, execution, done), name="heartbeat", daemon=True)
        beats.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            beats.join(timeout=5)
            if self.presence is not None:
                self.presence.hold(None)
            if self.lane is not None:
                self.lane.follow(None)
        self.set_state(WorkerStatus.IDLE)

    def _beat(self, job: Any, execution: Any, done: threading.Event) -> None:
        # Without these, RQ would take a job running longer than its worker TTL for abandoned.
        while not done.wait(min(30, self.job_monitoring_interval)):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception:
                log.warning("could not send the job heartbeat", exc_info=True)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """The first SIGTERM or Ctrl-C: no copy of the model takes another job; each finishes the one in hand."""
        for other in self.others:
            other.stop(wait=False)
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """The second SIGTERM or Ctrl-C: stop at once; the jobs in hand (the priority lane's too) go back on their
        queues."""
        held = list(self.presence.holding) if self.presence is not None else []
        current = self.get_current_job_id()
        if current is not None and current not in held:
            held.append(current)
        if not held:
            raise SystemExit()
        self.interrupted = held
        # The second signal may cut the first one's handler short, before RQ marked the stop as requested.
        self._stop_requested = True
        log.warning("cold stop: handing %s back", ", ".join(self.interrupted))
        raise ColdStop()


def worker_info(worker_id: str, engine: Engine, gpu: str | None, settings: Settings, copies: int = 1) -> WorkerInfo:
    """What this worker tells the fleet about itself; `copies` of its model decode queued jobs at once."""
    return WorkerInfo(
        role=settings.role,
        live_slots=settings.live_slots if settings.role != "batch" else 0,
        batch=batching.width(settings, engine.device) * copies,
        id=worker_id,
        model=engine.name,
        device=engine.device,
        compute_type=engine.compute_type,
        multilingual=engine.multilingual,
        gpu=gpu,
        host=socket.gethostname(),
        pid=os.getpid(),
        started_at=utcnow(),
    )


def run(settings: Settings, burst: bool = False) -> None:
    """Claim a GPU (if any), load the model, then serve jobs until stopped (or, in burst mode, until idle)."""
    if settings.nice:
        os.nice(settings.nice)  # where cores are shared, the scheduler serves live workers first
    redis = connect(settings.redis_dsn, patient=True)
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    lease = GpuLease(redis, settings, worker_id)
    gpu = lease.acquire(threading.Event())
    try:
        device = pick_device(settings.device)
        copies = replicas.count(settings, device, burst)
        engine = load_engine(settings, nice=lane.main_nice(settings, device), copies=copies)
        serve(settings, redis, worker_id, engine, gpu, lease, burst, copies)
    finally:
        lease.release()


def serve(
    settings: Settings,
    redis: Redis,
    worker_id: str,
    engine: Engine,
    gpu: str | None,
    lease: GpuLease,
    burst: bool,
    copies: int = 1,
) -> None:
    """Announce the worker, start its chores and its callback thread, and run RQ's loop."""
    stores = Stores.open(redis, settings)
    lifecycle = Lifecycle(redis, stores, settings.keep_uploads)
    # The announcement gives up at once while Redis is away, so the worker announces itself as soon as it is back.
    info = worker_info(worker_id, engine, gpu, settings, copies)
    presence = fleet.Presence(connect(settings.redis_dsn, patient=False), info, settings.worker_ttl_s)
    ctx = context.WorkerContext(worker_id, redis, settings, engine, stores, lifecycle, presence)
    context.install(ctx)
    janitor = Janitor(redis, lifecycle, settings)
    chores: list[Callable[[], object]] = [presence.announce, lease.refresh, janitor.sweep]
    if settings.role != "live":  # a live worker need not have the upload volume
        chores.append(LeftoverSweep(redis, stores.storage, settings))
    if settings.heartbeat_file is not None:
        chores.insert(0, settings.heartbeat_file.touch)
    upkeep = Upkeep(settings.worker_ttl_s / 3, chores)
    upkeep.start()
    deliverer = Deliverer(stores, settings)
    deliverer.start()
    live_stop = threading.Event()
    live = LiveServer(connect(settings.redis_dsn, patient=True), engine, worker_id, settings.live_slots, live_stop)
    try:
        if settings.role == "live":
            serve_live(live, live_stop)
        else:
            live_thread = live.start_thread() if settings.role == "both" else None
            serve_batch(ctx, gpu, janitor, burst, copies)
            live_stop.set()
            if live_thread is not None:
                live_thread.join(timeout=10)
    finally:
        deliverer.stop()
        upkeep.stop()
        fleet.withdraw(redis, worker_id)


def serve_batch(ctx: context.WorkerContext, gpu: str | None, janitor: Janitor, burst: bool, copies: int = 1) -> None:
    """RQ's loop over the model's queues, highest priority first, with its replicas (`copies` in all) and the
    priority lane beside it where they run; a job cut off by a cold stop is handed back."""
    queue_names = keys.queue_names(ctx.engine.name)
    log.info(
        "worker %s serves %s on %s (GPU %s); queues %s",
        ctx.worker_id,
        ctx.engine.name,
        ctx.engine.device,
        gpu,
        queue_names,
    )
    rq_worker = Worker(queue_names, connection=ctx.redis, name=ctx.worker_id)
    rq_worker.presence = ctx.presence
    if lane.wanted(ctx.settings, ctx.engine.device):
        rq_worker.lane = lane.Lane(ctx, Worker)
        rq_worker.lane.start()
    rq_worker.replicas = replicas.start(ctx, Worker, rq_worker.lane, copies)
    try:
        rq_worker.work(burst=burst, with_scheduler=False, logging_level=ctx.settings.log_level.upper())
    finally:
        for other in rq_worker.others:
            other.stop(wait=False)
        for other in rq_worker.others:  # a cold stop hands their jobs back too; a warm one waits for them
            other.stop(wait=not rq_worker.interrupted)
        for job_id in rq_worker.interrupted:
            janitor.hand_back(job_id, ctx.worker_id)


def serve_live(live: LiveServer, stop: threading.Event) -> None:
    """Serve live sessions in this thread until SIGTERM or Ctrl-C."""

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("live worker stopping (signal %d)", signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    live.run()

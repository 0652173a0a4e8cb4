"""Further copies of a batch worker's model, each decoding in a thread of its own with its own RQ worker.

A copy loads its own model in its thread (at the niceness it is given), installs a context of its own there, and
takes jobs from its queues one at a time until stopped. Its jobs are announced with the main loop's
(`fleet.Presence` keeps each thread's), so a worker that dies mid-job loses none; a warm stop waits for the job in
hand, a cold stop hands it back. The priority lane (`worker.lane`) and the replicas (`worker.replicas`) are copies.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from redis.exceptions import RedisError
from rq.timeouts import BaseDeathPenalty

from worker import context
from worker.context import WorkerContext
from worker.engine import load_engine

log = logging.getLogger(__name__)


class OwnDeadlines(BaseDeathPenalty):
    """No RQ time limit: jobs are queued without one and keep their own (`worker.deadline`, which works in any
    thread), while RQ's default, a timer signal, can only be set from the main thread."""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


class Copy:
    """A thread with its own copy of the model and its own RQ worker on `queue_names`."""

    def __init__(
        self, ctx: WorkerContext, worker_class: Any, queue_names: list[str], name: str, nice: int, copies: int
    ) -> None:
        self._ctx = ctx
        self._nice = nice
        self._copies = copies  # copies decoding at once, which share the CPU threads
        self._rq = worker_class(queue_names, connection=ctx.redis, name=f"{ctx.worker_id}-{name}")
        self._rq.presence = ctx.presence
        self._rq.death_penalty_class = OwnDeadlines
        self._stop = threading.Event()
        self._taking = threading.Lock()  # held while the copy waits on its queues for a job
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    @property
    def rq(self) -> Any:
        """This copy's RQ worker."""
        return self._rq

    def start(self) -> None:
        """Load this copy of the model in its thread, then serve."""
        self._thread.start()

    def stop(self, wait: bool = True) -> None:
        """Take no more jobs; wait for the one in hand, unless it is being handed back.

        Either way, once this returns the copy waits on no queue: a job handed back there (the main loop's, on a
        cold stop) stays for another worker.
        """
        self._stop.set()
        self._wake()
        with self._taking:
            pass
        if wait:
            self._thread.join()

    def _ready(self) -> bool:
        """Whether to look for a job now (a copy may wait up to half a second to say)."""
        return True

    def _wake(self) -> None:
        """Cut a wait in `_ready` short."""

    def _serve(self) -> None:
        engine = load_engine(self._ctx.settings, nice=self._nice, copies=self._copies)
        context.install_here(dataclasses.replace(self._ctx, engine=engine))
        self._registered(self._rq.register_birth)  # so that `rq info` shows the copy beside its worker
        log.info("%s ready: a copy of %s", self._thread.name.replace("-", " "), engine.name)
        try:
            while not self._stop.is_set():
                if self._ready() and not self._stop.is_set():
                    self._take_one()
        finally:
            self._registered(self._rq.register_death)

    @staticmethod
    def _registered(change: Any) -> None:
        """RQ's record of its workers; the copy works without it while Redis is away."""
        try:
            change()
        except RedisError:
            log.warning("could not update RQ's record of a copy of the model", exc_info=True)

    def _take_one(self) -> None:
        """Run the next job, if one comes within a second."""
        try:
            with self._taking:
                if self._stop.is_set():
                    return
                taken = self._rq.dequeue_job_and_maintain_ttl(timeout=1, max_idle_time=1)
                if taken is not None and self._stop.is_set():  # stopped meanwhile: the job goes back, first in line
                    job, queue = taken
                    queue.push_job_id(job.id, at_front=True)
                    return
            if taken is not None:
                self._rq.execute_job(*taken)
        except Exception:  # Redis may be briefly away; the copy tries again
            log.warning("%s could not take a job; trying again shortly", self._thread.name, exc_info=True)
            self._stop.wait(1)

"""The priority lane: a high-priority task runs at once, beside the lower-priority job in hand.

A window of a long file takes seconds on a CPU, longer than a short clip does, and CTranslate2 cannot stop a
window midway. So a batch worker on CPU (`WHISPERQ_PRIORITY_LANE`, auto) holds its model twice: the main loop's
copy, whose decoding threads run at the lowest CPU priority (nice 19, `engine.niced`), and the lane's, at the
worker's own. While the main loop runs a job of normal or low priority, the lane takes jobs from the model's
high-priority queue, one at a time, and runs them in its own thread with its own copy: the scheduler gives the
lane's threads the cores, and the main loop's decode goes on with what they leave. When the main loop is idle or
runs a high-priority job itself, the lane takes nothing (the main loop takes high-priority jobs first anyway).

The lane's jobs are announced with the main loop's (`fleet.Presence` keeps each thread's), so a worker that dies
mid-job loses neither; a warm stop waits for the lane's job as for the main loop's.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from redis.exceptions import RedisError
from rq.timeouts import BaseDeathPenalty

from shared import keys
from shared.enums import Priority
from shared.settings import Settings
from worker import context
from worker.context import WorkerContext
from worker.engine import load_engine

log = logging.getLogger(__name__)

# The niceness of the main loop's decoding threads where a lane runs: the scheduler's lowest priority.
MAIN_NICE = 19


def wanted(settings: Settings, device: str) -> bool:
    """Whether a worker runs a lane: set, or on CPU by default; never beside live sessions, which share the one
    copy of the model and must not decode at the lowest priority."""
    if settings.role != "batch":
        return False
    return settings.priority_lane == "on" or (settings.priority_lane == "auto" and device == "cpu")


class _OwnDeadlines(BaseDeathPenalty):
    """No RQ time limit: jobs are queued without one and keep their own (`worker.deadline`, which works in any
    thread), while RQ's default, a timer signal, can only be set from the main thread."""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


class Lane:
    """A thread with its own copy of the model that takes high-priority jobs while the main loop runs lower ones."""

    def __init__(self, ctx: WorkerContext, worker_class: Any) -> None:
        self.queue_name = keys.queue_name(ctx.engine.name, Priority.HIGH)
        self._ctx = ctx
        # An RQ worker of its own, on the high-priority queue alone, named after the worker it runs in.
        self._rq = worker_class([self.queue_name], connection=ctx.redis, name=f"{ctx.worker_id}-lane")
        self._rq.presence = ctx.presence
        self._rq.death_penalty_class = _OwnDeadlines
        self._behind = threading.Event()  # set while the main loop runs a job of lower priority
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="priority-lane", daemon=True)

    def start(self) -> None:
        """Load the lane's copy of the model in its thread, then serve."""
        self._thread.start()

    def follow(self, queue_name: str | None) -> None:
        """The main loop starts a job from this queue, or (None) has ended it."""
        if queue_name is not None and queue_name != self.queue_name:
            self._behind.set()
        else:
            self._behind.clear()

    def stop(self, wait: bool = True) -> None:
        """Take no more jobs; wait for the one in hand, unless it is being handed back."""
        self._stop.set()
        self._behind.set()  # wake the lane to see the stop
        if wait:
            self._thread.join()

    def _serve(self) -> None:
        engine = load_engine(self._ctx.settings)  # built in this thread: at the worker's own priority
        context.install_here(dataclasses.replace(self._ctx, engine=engine))
        self._registered(self._rq.register_birth)  # so that `rq info` shows the lane beside its worker
        log.info("priority lane ready: high-priority jobs of %s run beside lower ones", engine.name)
        try:
            while not self._stop.is_set():
                if self._behind.wait(0.5) and not self._stop.is_set():
                    self._take_one()
        finally:
            self._registered(self._rq.register_death)

    @staticmethod
    def _registered(change: Any) -> None:
        """RQ's record of its workers; the lane works without it while Redis is away."""
        try:
            change()
        except RedisError:
            log.warning("could not update RQ's record of the priority lane", exc_info=True)

    def _take_one(self) -> None:
        """Run the next high-priority job, if one comes within a second."""
        try:
            taken = self._rq.dequeue_job_and_maintain_ttl(timeout=1, max_idle_time=1)
            if taken is not None:
                self._rq.execute_job(*taken)
        except Exception:  # Redis may be briefly away; the lane tries again
            log.warning("the priority lane could not take a job; trying again shortly", exc_info=True)
            self._stop.wait(1)

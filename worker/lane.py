"""The priority lane: a high-priority task runs at once, beside the lower-priority job in hand.

A window of a long file takes seconds on a CPU, longer than a short clip does, and CTranslate2 cannot stop a
window midway. So a batch worker on CPU (`WHISPERQ_PRIORITY_LANE`, auto) holds one more copy of its model: the main
loop's copy (and its replicas', `worker.replicas`), whose decoding threads run at the lowest CPU priority (nice 19,
`engine.niced`), and the lane's, at the worker's own. While any of the others runs a job of normal or low priority,
the lane takes jobs from the model's high-priority queue, one at a time, and runs them in its own thread with its
own copy (`worker.copies`): the scheduler gives the lane's threads the cores, and the other decodes go on with what
they leave. When all the others are idle or run high-priority jobs themselves, the lane takes nothing (they take
high-priority jobs first anyway).
"""

from __future__ import annotations

import threading
from typing import Any

from shared import keys
from shared.enums import Priority
from shared.settings import Settings
from worker.context import WorkerContext
from worker.copies import Copy

# The niceness of the main loop's decoding threads where a lane runs: the scheduler's lowest priority.
MAIN_NICE = 19


def wanted(settings: Settings, device: str) -> bool:
    """Whether a worker runs a lane: set, or on CPU by default; never beside live sessions, which share the one
    copy of the model and must not decode at the lowest priority."""
    if settings.role != "batch":
        return False
    return settings.priority_lane == "on" or (settings.priority_lane == "auto" and device == "cpu")


def main_nice(settings: Settings, device: str) -> int:
    """How far below the worker's CPU priority its main copy (and replicas) decode: the lowest where a lane runs."""
    return MAIN_NICE if wanted(settings, device) else 0


class Lane(Copy):
    """A copy of the model that takes high-priority jobs while the worker's other copies run lower ones."""

    def __init__(self, ctx: WorkerContext, worker_class: Any) -> None:
        self.queue_name = keys.queue_name(ctx.engine.name, Priority.HIGH)
        # At the worker's own priority, with every core the worker may use.
        super().__init__(ctx, worker_class, [self.queue_name], "priority-lane", nice=0, copies=1)
        self._lock = threading.Lock()
        self._lower: set[int] = set()  # the threads running a job of lower priority
        self._behind = threading.Event()  # set while any of them does

    def follow(self, queue_name: str | None) -> None:
        """The calling thread (the main loop or a replica) starts a job from this queue, or (None) has ended it."""
        with self._lock:
            if queue_name is not None and queue_name != self.queue_name:
                self._lower.add(threading.get_ident())
            else:
                self._lower.discard(threading.get_ident())
            if self._lower:
                self._behind.set()
            else:
                self._behind.clear()

    def _ready(self) -> bool:
        return self._behind.wait(0.5)

    def _wake(self) -> None:
        self._behind.set()

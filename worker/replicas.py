"""Replicas: more copies of a CPU batch worker's model, each taking jobs from all the model's queues at once.

On a CPU, one decode on two threads is 1.2x faster than on one, while two decodes of one thread each, side by
side, get through 1.6x as much (README, Long files). So a CPU batch worker that may use two cores or more decodes
with `WHISPERQ_REPLICAS` copies of its model (auto: 2 there, else 1), the CPU threads shared out among them: the
main loop's copy and its replicas, each in a thread of its own with its own RQ worker on the model's queues,
highest priority first. Replicas decode at the main loop's niceness, so the priority lane comes first.
"""

from __future__ import annotations

import os
from typing import Any

from shared import keys
from shared.settings import Settings
from worker.context import WorkerContext
from worker.copies import Copy
from worker.lane import main_nice


def count(settings: Settings, device: str, burst: bool = False) -> int:
    """Copies of the model that decode queued jobs at once: the setting, else 2 for a CPU batch worker that may
    use two cores or more; 1 beside live sessions (which share the main copy), on a GPU (batches fill it) and in a
    burst worker (which stops once the queues are empty: its main loop would stop while a replica queued more)."""
    if settings.role != "batch" or burst:
        return 1
    if settings.replicas:
        return settings.replicas
    return 2 if device == "cpu" and len(os.sched_getaffinity(0)) >= 2 else 1


def start(ctx: WorkerContext, worker_class: Any, lane: Any, copies: int) -> list[Copy]:
    """The replicas beside the main loop's copy (`copies` in all), started, decoding at its niceness; each tells
    the lane (if any) what it runs."""
    nice = main_nice(ctx.settings, ctx.engine.device)
    replicas: list[Copy] = []
    for index in range(1, copies):
        replica = Copy(ctx, worker_class, keys.queue_names(ctx.engine.name), f"replica-{index}", nice, copies)
        replica.rq.lane = lane
        replica.start()
        replicas.append(replica)
    return replicas

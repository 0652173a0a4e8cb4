"""What a worker builds once at start-up and hands to every job."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from redis import Redis

from shared.fleet import Presence
from shared.lifecycle import Lifecycle
from shared.settings import Settings
from shared.stores import Stores
from worker.engine import Engine


@dataclass(frozen=True)
class WorkerContext:
    """The loaded engine, the stores a job works with, and the lifecycle that ends tasks."""

    worker_id: str
    redis: Redis
    settings: Settings
    engine: Engine
    stores: Stores
    lifecycle: Lifecycle
    presence: Presence | None = None  # says which jobs the worker holds; None where no RQ loop runs


_current: WorkerContext | None = None
_here = threading.local()  # a thread's own context, where it differs (the priority lane's engine)


def install(context: WorkerContext) -> None:
    """Make the context available to jobs run by this process."""
    global _current
    _current = context


def install_here(context: WorkerContext) -> None:
    """Make the context available to jobs run by this thread, in place of the process's."""
    _here.context = context


def current() -> WorkerContext:
    """The context of the worker running this job."""
    context: WorkerContext | None = getattr(_here, "context", None) or _current
    if context is None:
        raise RuntimeError("no worker context: jobs run inside `whisperq worker`, which loads the model first")
    return context

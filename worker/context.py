"""What a worker builds once at start-up and hands to every job."""

from __future__ import annotations

from dataclasses import dataclass

from shared.chunks import ChunkStore
from shared.settings import Settings
from shared.storage import UploadStorage
from shared.store import TaskStore
from worker.engine import Engine


@dataclass(frozen=True)
class WorkerContext:
    """The loaded engine and the stores a job works with."""

    worker_id: str
    settings: Settings
    engine: Engine
    store: TaskStore
    chunks: ChunkStore
    storage: UploadStorage


class ColdStop(BaseException):  # noqa: N818 -- a stop, like KeyboardInterrupt, not an error
    """The worker was told to stop at once; the job in hand is handed back, not failed."""


_current: WorkerContext | None = None


def install(context: WorkerContext) -> None:
    """Make the context available to jobs run by this process."""
    global _current
    _current = context


def current() -> WorkerContext:
    """The context of the worker running this job."""
    if _current is None:
        raise RuntimeError("no worker context: jobs run inside `whisperq worker`, which loads the model first")
    return _current

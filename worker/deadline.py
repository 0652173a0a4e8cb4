"""Time limits for a job's steps, from a timer signal in the worker's main thread (where RQ runs jobs)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from shared.errors import TaskTimeout


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TaskTimeout in the block once `seconds` have passed."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise TaskTimeout(f"the task ran past its {seconds:.0f}-second time limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

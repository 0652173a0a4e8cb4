"""Time limits for a job's steps: a timer signal in the worker's main thread (where RQ runs jobs), an exception
sent by a timer to any other thread (the priority lane's)."""

from __future__ import annotations

import ctypes
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from shared.errors import TaskTimeout


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TaskTimeout in the block once `seconds` have passed."""
    message = f"the task ran past its {seconds:.0f}-second time limit"
    limit = _signalled if threading.current_thread() is threading.main_thread() else _timed
    with limit(seconds, message):
        yield


@contextmanager
def _signalled(seconds: float, message: str) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise TaskTimeout(message)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _timed(seconds: float, message: str) -> Iterator[None]:
    """Like a signal, the exception is raised when the thread next runs Python code (not inside a decode)."""

    class Expired(TaskTimeout):
        def __init__(self) -> None:
            super().__init__(message)

    thread = ctypes.c_ulong(threading.get_ident())
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def expire() -> None:
        with lock:
            if not state["done"]:
                state["fired"] = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread, ctypes.py_object(Expired))

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["fired"]:  # not raised yet if the block ended first: withdraw it
                ctypes.pythonapi.PyThreadState_SetAsyncExc(thread, None)

"""The pieces `whisperq up` starts stop when it is gone, even when it was killed and could not stop them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
GRACE_S = 10.0


class Lifeline:
    """A pipe whose write end only the parent holds: a child reads end-of-file once the parent has exited."""

    def __init__(self) -> None:
        # Neither end is inherited unless passed on by name; the write end lives as long as this process.
        self.fd, self._write_end = os.pipe()


def stop_when_closed(fd: int, grace_s: float = GRACE_S) -> None:
    """In a child: once the parent's end of the lifeline is closed, SIGTERM this process, and SIGKILL it after grace_s.

    The clean stop may need Redis, which stops too when its parent dies: nobody waits for the child any more, so it
    must not hang on.
    """

    def watch() -> None:
        with os.fdopen(fd, "rb", buffering=0) as pipe:
            while pipe.read(1):  # the parent never writes: this returns at end-of-file
                pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def terminate_with_parent() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies; None where there is no such thing."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork, not in the child
    parent = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request was in place
            os._exit(1)

    return arm

"""Exceptions that unwind a job without failing its task: not errors a client sees, so not `WhisperqError`s."""

from __future__ import annotations


class ColdStop(BaseException):  # noqa: N818 -- a stop, like KeyboardInterrupt, not an error
    """The worker was told to stop at once; the job in hand is handed back, not failed."""


class TaskCancelled(Exception):  # noqa: N818 -- an event the job reacts to, not an error
    """The task was cancelled or deleted while a worker ran it; the job stops at once."""


class ChunkTaken(Exception):  # noqa: N818
    """The chunk in hand was given to another worker (this one was taken for dead); its work here is dropped."""

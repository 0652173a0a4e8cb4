"""Closed sets of values."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class TaskStatus(str, Enum):
    """Where a task is in its lifecycle."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for states a task never leaves."""
        return self in {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}


class ChunkStatus(str, Enum):
    """Where one chunk of a split task stands: waiting its turn, on a queue, in a worker's hands, or done."""

    PENDING = "pending"
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"


class CallbackStatus(str, Enum):
    """Where a task's completion notice stands."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Priority(str, Enum):
    """Queue priority, highest first (workers listen in this order)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class TaskType(str, Enum):
    """What the engine does with the speech."""

    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class ResponseFormat(str, Enum):
    """Formats a result can be fetched in."""

    JSON = "json"
    TEXT = "text"
    SRT = "srt"
    VTT = "vtt"
    TSV = "tsv"
    VERBOSE_JSON = "verbose_json"


class TaskView(str, Enum):
    """How much of a task a status poll answers with: everything, or all but the result (fetched by its own route)."""

    FULL = "full"
    STATUS = "status"


def lua_set(members: Iterable[Enum]) -> str:
    """A Lua table literal with these values as keys, so a script tests membership by the enum's own values."""
    return "{" + ", ".join(f"[{member.value!r}] = true" for member in members) + "}"


FINISHED_STATUSES = lua_set(status for status in TaskStatus if status.finished)

"""Closed sets of values."""

from __future__ import annotations

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

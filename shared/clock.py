"""Time as whisperq stores it: aware UTC datetimes, and milliseconds since the epoch for scores."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """The current time, in UTC."""
    return datetime.now(timezone.utc)


def to_ms(moment: datetime) -> int:
    """Milliseconds since the epoch: the score of sorted-set indexes and queues."""
    return int(moment.timestamp() * 1000)

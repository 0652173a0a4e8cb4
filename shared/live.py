"""Live sessions: what the API and a live worker say to each other, through two Redis streams per session.

The API writes the session's commands to `live_in_key`: its settings, audio (PCM16 mono at the session's rate), commit,
clear, end. The worker that took the session writes events to `live_out_key`: ready, speech started and stopped,
committed, delta, completed, cleared, failed, error. Every write renews the stream's expiry, and the API keeps the
session's presence key alive while its client is connected, so nothing outlives a session by more than a few minutes.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from redis import Redis

from shared import keys

SAMPLE_RATES = (16000, 24000)
# A stream lapses this long after its last write.
STREAM_TTL_S = 120
# The API renews a session's presence every PRESENCE_RENEW_S; a worker drops a session whose presence has lapsed.
PRESENCE_TTL_S = 6
PRESENCE_RENEW_S = 2.0


class TurnDetection(BaseModel):
    """Server VAD: a turn starts where speech does and ends after this much silence."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=5000)
    silence_duration_ms: int = Field(default=500, ge=100, le=10000)


class LiveConfig(BaseModel):
    """A live session's settings, as the worker applies them."""

    model_config = ConfigDict(extra="forbid")

    model: str
    rate: Literal[16000, 24000] = 24000
    language: str | None = None
    prompt: str | None = None
    turn_detection: TurnDetection | None = Field(default_factory=TurnDetection)


class Command:
    """Kinds of message in a session's input stream."""

    CONFIG = "config"
    AUDIO = "audio"
    COMMIT = "commit"
    CLEAR = "clear"
    END = "end"


class Event:
    """Kinds of message in a session's output stream."""

    READY = "ready"
    STARTED = "started"
    STOPPED = "stopped"
    COMMITTED = "committed"
    DELTA = "delta"
    COMPLETED = "completed"
    CLEARED = "cleared"
    FAILED = "failed"
    ERROR = "error"


def command_fields(kind: str, payload: bytes | dict[str, Any] | None = None) -> dict[str, bytes | str | float]:
    """One input-stream entry: audio carries its bytes and the time they arrived, others a JSON payload."""
    fields: dict[str, bytes | str | float] = {"kind": kind, "at": time.time()}
    if isinstance(payload, bytes):
        fields["pcm"] = payload
    elif payload is not None:
        fields["data"] = json.dumps(payload)
    return fields


def emit(redis: Redis, session_id: str, kind: str, **data: Any) -> None:
    """Write one event to the session's output stream and renew its expiry."""
    key = keys.live_out_key(session_id)
    pipe = redis.pipeline(transaction=False)
    pipe.xadd(key, {"kind": kind, "data": json.dumps(data)})
    pipe.expire(key, STREAM_TTL_S)
    pipe.execute()


def decode_entry(fields: dict[bytes, bytes]) -> tuple[str, dict[str, Any], bytes | None, float]:
    """An entry's kind, JSON payload, audio bytes and time of arrival."""
    kind = fields[b"kind"].decode()
    data = json.loads(fields[b"data"]) if b"data" in fields else {}
    at = float(fields.get(b"at", b"0"))
    return kind, data, fields.get(b"pcm"), at

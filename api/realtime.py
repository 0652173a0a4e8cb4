"""OpenAI's Realtime API in its transcription form, as whisperq speaks it: the session object, client events in,
server events out. The socket itself is api/routes/realtime.py; the worker's side is worker/live.py.

Shapes follow the `openai` SDK's `types.realtime` models (a transcription session: `audio.input.format`,
`transcription`, `turn_detection`). Beyond OpenAI, PCM16 at 16 kHz is accepted as well as 24 kHz.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from shared.languages import to_code
from shared.live import Event, LiveConfig, TurnDetection

# Model names an OpenAI client may send; each means the deployment's live model.
OPENAI_MODELS = ("whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe", "gpt-live-transcribe")


class ClientError(Exception):
    """A client event that cannot be applied: answered with an `error` event, the session stays open."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param
        self.event_id: str | None = None


def event_id() -> str:
    """A fresh server event id."""
    return f"event_{uuid.uuid4().hex[:22]}"


def error_event(code: str, message: str, *, kind: str = "invalid_request_error", **extra: Any) -> dict[str, Any]:
    """An `error` server event."""
    error = {"type": kind, "code": code, "message": message, "param": None, "event_id": None}
    error.update({key: value for key, value in extra.items() if value is not None})
    return {"type": "error", "event_id": event_id(), "error": error}


def session_object(session_id: str, config: LiveConfig) -> dict[str, Any]:
    """The transcription session, as `session.created` and `session.updated` carry it."""
    detection = config.turn_detection
    return {
        "type": "transcription",
        "id": session_id,
        "object": "realtime.transcription_session",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": config.rate},
                "transcription": {"model": config.model, "language": config.language, "prompt": config.prompt or ""},
                "turn_detection": None if detection is None else {"type": "server_vad", **detection.model_dump()},
                "noise_reduction": None,
            }
        },
        "include": [],
    }


def updated_config(config: LiveConfig, session: Any, live_model: str) -> LiveConfig:
    """The settings after a `session.update`: only the fields present change."""
    if not isinstance(session, dict):
        raise ClientError("invalid_value", "session must be an object", "session")
    if session.get("type", "transcription") != "transcription":
        raise ClientError(
            "invalid_value", "only transcription sessions are served (intent=transcription)", "session.type"
        )
    audio_input = _object(_object(session, "audio"), "input")
    changes: dict[str, Any] = {}
    if "format" in audio_input:
        changes["rate"] = _rate(audio_input["format"])
    transcription = _object(audio_input, "transcription")
    if "model" in transcription:
        changes["model"] = _model(transcription["model"], live_model)
    if "language" in transcription:
        changes["language"] = _language(transcription["language"])
    if "prompt" in transcription:
        changes["prompt"] = str(transcription["prompt"] or "") or None
    if "turn_detection" in audio_input:
        changes["turn_detection"] = _turn_detection(audio_input["turn_detection"])
    return config.model_copy(update=changes)


def _object(parent: dict[str, Any], name: str) -> dict[str, Any]:
    value = parent.get(name) or {}
    if not isinstance(value, dict):
        raise ClientError("invalid_value", f"{name} must be an object", name)
    return value


def _rate(fmt: Any) -> int:
    if fmt in ("pcm16",):  # the beta API's name for PCM16 at 24 kHz
        return 24000
    if not isinstance(fmt, dict) or fmt.get("type", "audio/pcm") != "audio/pcm":
        raise ClientError(
            "unsupported_audio_format",
            "audio/pcm (PCM16 mono, 24 or 16 kHz) is the format served",
            "audio.input.format",
        )
    rate = fmt.get("rate", 24000)
    if rate not in (16000, 24000):
        raise ClientError("unsupported_audio_format", "rate must be 24000 or 16000", "audio.input.format.rate")
    return int(rate)


def _model(name: Any, live_model: str) -> str:
    if not isinstance(name, str) or not name:
        raise ClientError(
            "invalid_value", "transcription.model must be a model name", "audio.input.transcription.model"
        )
    return live_model if name in OPENAI_MODELS else name


def _language(value: Any) -> str | None:
    if value in (None, ""):
        return None
    code = to_code(str(value)) if isinstance(value, str) else None
    if code is None:
        raise ClientError("invalid_value", f"unknown language {value!r}", "audio.input.transcription.language")
    return code


def _turn_detection(value: Any) -> TurnDetection | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("type", "server_vad") != "server_vad":
        raise ClientError("invalid_value", "turn_detection is server_vad or null", "audio.input.turn_detection")
    fields = {name: value[name] for name in ("threshold", "prefix_padding_ms", "silence_duration_ms") if name in value}
    try:
        return TurnDetection(**{name: field for name, field in fields.items() if field is not None})
    except ValueError as exc:
        raise ClientError("invalid_value", f"turn_detection: {exc}", "audio.input.turn_detection") from exc


def audio_bytes(event: dict[str, Any]) -> bytes:
    """The PCM16 bytes of an `input_audio_buffer.append`."""
    audio = event.get("audio")
    if not isinstance(audio, str):
        raise ClientError("invalid_value", "audio must be a base64 string", "audio")
    try:
        pcm = base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ClientError("invalid_value", f"audio is not valid base64: {exc}", "audio") from exc
    if len(pcm) % 2:
        raise ClientError("invalid_audio_format", "PCM16 audio has an even number of bytes", "audio")
    return pcm


def server_event(kind: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """The OpenAI event for one worker event (None for those the client does not see)."""
    item = data.get("item")
    if kind == Event.STARTED:
        body = {"type": "input_audio_buffer.speech_started", "audio_start_ms": data["audio_start_ms"], "item_id": item}
    elif kind == Event.STOPPED:
        body = {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": data["audio_end_ms"], "item_id": item}
    elif kind == Event.COMMITTED:
        body = {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": data["previous_item"]}
    elif kind == Event.DELTA:
        body = {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": item,
            "content_index": 0,
            "delta": data["delta"],
        }
    elif kind == Event.COMPLETED:
        body = {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item,
            "content_index": 0,
            "transcript": data["transcript"],
            "usage": {"type": "duration", "seconds": round(data["audio_s"], 3)},
        }
    elif kind == Event.CLEARED:
        body = {"type": "input_audio_buffer.cleared"}
    elif kind == Event.FAILED:
        error = {"type": "server_error", "code": data["code"], "message": data["message"], "param": None}
        body = {
            "type": "conversation.item.input_audio_transcription.failed",
            "item_id": item,
            "content_index": 0,
            "error": error,
        }
    elif kind == Event.ERROR:
        return error_event(
            data["code"], data["message"], kind="server_error" if data.get("fatal") else "invalid_request_error"
        )
    else:
        return None
    return {"event_id": event_id(), **body}

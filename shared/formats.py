"""Rendering a transcript in the formats clients ask for."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from shared.enums import ResponseFormat
from shared.languages import to_name
from shared.schemas import Segment, Transcript

MEDIA_TYPES = {
    ResponseFormat.JSON: "application/json",
    ResponseFormat.VERBOSE_JSON: "application/json",
    ResponseFormat.TEXT: "text/plain; charset=utf-8",
    ResponseFormat.SRT: "application/x-subrip; charset=utf-8",
    ResponseFormat.VTT: "text/vtt; charset=utf-8",
    ResponseFormat.TSV: "text/tab-separated-values; charset=utf-8",
}


def timestamp(seconds: float, separator: str) -> str:
    """HH:MM:SS<sep>mmm, as SRT (',') and WebVTT ('.') write times."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(segment: Segment) -> str:
    return segment.text.strip().replace("-->", "->")


def to_text(transcript: Transcript) -> str:
    """Plain text, one line."""
    return transcript.text + "\n"


def to_srt(transcript: Transcript) -> str:
    """SubRip subtitles."""
    cues = [
        f"{index}\n{timestamp(seg.start, ',')} --> {timestamp(seg.end, ',')}\n{_cue_text(seg)}\n"
        for index, seg in enumerate(transcript.segments, start=1)
    ]
    return "\n".join(cues)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT subtitles."""
    cues = [
        f"{timestamp(seg.start, '.')} --> {timestamp(seg.end, '.')}\n{_cue_text(seg)}\n" for seg in transcript.segments
    ]
    return "\n".join(["WEBVTT\n", *cues])


def to_tsv(transcript: Transcript) -> str:
    """Start and end in milliseconds and the text, tab-separated, as Whisper writes TSV."""
    rows = [
        f"{round(seg.start * 1000)}\t{round(seg.end * 1000)}\t{_cue_text(seg).replace(chr(9), ' ')}"
        for seg in transcript.segments
    ]
    return "\n".join(["start\tend\ttext", *rows]) + "\n"


def to_json(transcript: Transcript) -> str:
    """whisperq's own transcript JSON."""
    return transcript.model_dump_json()


def verbose_json(transcript: Transcript) -> dict[str, Any]:
    """OpenAI's `verbose_json` shape."""
    body: dict[str, Any] = {
        "task": transcript.task.value,
        "language": to_name(transcript.language) or transcript.language,
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": [seg.model_dump(exclude={"words"}) for seg in transcript.segments],
    }
    words = [word.model_dump() for seg in transcript.segments for word in seg.words or []]
    if words:
        body["words"] = words
    return body


_RENDERERS: dict[ResponseFormat, Callable[[Transcript], str]] = {
    ResponseFormat.JSON: to_json,
    ResponseFormat.VERBOSE_JSON: lambda transcript: json.dumps(verbose_json(transcript), ensure_ascii=False),
    ResponseFormat.TEXT: to_text,
    ResponseFormat.SRT: to_srt,
    ResponseFormat.VTT: to_vtt,
    ResponseFormat.TSV: to_tsv,
}


def render(transcript: Transcript, fmt: ResponseFormat) -> tuple[str, str]:
    """The body and media type of a transcript in one format."""
    return _RENDERERS[fmt](transcript), MEDIA_TYPES[fmt]

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


def _labelled(transcript: Transcript) -> bool:
    return transcript.speakers is not None


def to_text(transcript: Transcript) -> str:
    """Plain text, one line; with speaker labels, a line per speaker turn (`SPEAKER_00: ...`)."""
    if not _labelled(transcript):
        return transcript.text + "\n"
    lines: list[list[str]] = []
    previous = None
    for segment in transcript.segments:
        if segment.speaker != previous or not lines:
            lines.append([f"{segment.speaker}:"])
            previous = segment.speaker
        lines[-1].append(segment.text.strip())
    return "".join(" ".join(line) + "\n" for line in lines)


def to_srt(transcript: Transcript) -> str:
    """SubRip subtitles; with speaker labels, each cue starts `[SPEAKER_00]`."""
    cues = []
    for index, seg in enumerate(transcript.segments, start=1):
        text = f"[{seg.speaker}] {_cue_text(seg)}" if _labelled(transcript) else _cue_text(seg)
        cues.append(f"{index}\n{timestamp(seg.start, ',')} --> {timestamp(seg.end, ',')}\n{text}\n")
    return "\n".join(cues)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT subtitles; with speaker labels, each cue in a voice span (`<v SPEAKER_00>`)."""
    cues = []
    for seg in transcript.segments:
        text = _cue_text(seg).replace("<", "&lt;")
        text = f"<v {seg.speaker}>{text}" if _labelled(transcript) else text
        cues.append(f"{timestamp(seg.start, '.')} --> {timestamp(seg.end, '.')}\n{text}\n")
    return "\n".join(["WEBVTT\n", *cues])


def to_tsv(transcript: Transcript) -> str:
    """Start and end in milliseconds and the text, tab-separated, as Whisper writes TSV; a speaker column when
    labelled."""
    labelled = _labelled(transcript)
    rows = []
    for seg in transcript.segments:
        cells = [str(round(seg.start * 1000)), str(round(seg.end * 1000))]
        cells += [seg.speaker or ""] if labelled else []
        rows.append("\t".join([*cells, _cue_text(seg).replace(chr(9), " ")]))
    header = "start\tend\tspeaker\ttext" if labelled else "start\tend\ttext"
    return "\n".join([header, *rows]) + "\n"


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
        "segments": [seg.model_dump(exclude=_unlabelled(transcript, {"words"})) for seg in transcript.segments],
    }
    words = [
        word.model_dump(exclude=_unlabelled(transcript)) for seg in transcript.segments for word in seg.words or []
    ]
    if words:
        body["words"] = words
    if transcript.speakers is not None:
        body["speakers"] = [speaker.model_dump() for speaker in transcript.speakers]
    return body


def _unlabelled(transcript: Transcript, fields: set[str] | None = None) -> set[str]:
    """Fields left out of OpenAI's shapes: `speaker` unless the transcript is labelled."""
    return (fields or set()) | (set() if _labelled(transcript) else {"speaker"})


def diarized_json(transcript: Transcript) -> dict[str, Any]:
    """OpenAI's `diarized_json` shape (gpt-4o-transcribe-diarize): segments with speakers named A, B, ..."""
    names = {summary.speaker: _letters(index) for index, summary in enumerate(transcript.speakers or [])}
    return {
        "task": "transcribe",
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{seg.id:03d}",
                "start": seg.start,
                "end": seg.end,
                "text": seg.text.strip(),
                "speaker": names.get(seg.speaker or "", seg.speaker or "A"),
            }
            for seg in transcript.segments
        ],
        "usage": {"type": "duration", "seconds": round(transcript.duration, 3)},
    }


def _letters(index: int) -> str:
    """A, B, ..., Z, AA, AB, ...: OpenAI's names for speakers in order of appearance."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


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

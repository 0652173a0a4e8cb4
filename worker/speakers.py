"""Speaker turns laid on a transcript: a speaker on every word and segment, a segment split where the speaker changes.

Each word takes the speaker whose turn overlaps it most (or the nearest turn, for a word in a pause). Segments
without word timings get estimated ones, their text spread evenly over the segment's time, so a segment that
spans two speakers is still split between them. A lone word whose neighbours agree takes their speaker: a turn
boundary a few hundredths of a second off should not cut a sentence.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shared.schemas import Segment, SpeakerSummary, Transcript
from worker.diarization import Turn

Tokenize = Callable[[str], list[int]]


@dataclass(frozen=True)
class _Timed:
    """A word's text and time, measured or estimated."""

    start: float
    end: float
    text: str


def attach(transcript: Transcript, turns: Sequence[Turn], tokenize: Tokenize) -> Transcript:
    """The transcript with speakers on segments and words, segments split at speaker changes, and a summary."""
    if not turns:
        turns = [Turn(0.0, transcript.duration, "SPEAKER_00")] if transcript.segments else []
    finder = _Finder(turns)
    segments: list[Segment] = []
    for segment in transcript.segments:
        for piece in _split(segment, finder, tokenize):
            segments.append(piece.model_copy(update={"id": len(segments) + 1}))
    return transcript.model_copy(update={"segments": segments, "speakers": summary(turns)})


def summary(turns: Sequence[Turn]) -> list[SpeakerSummary]:
    """Each speaker's speaking time and turns, in order of first appearance."""
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    previous = None
    for turn in turns:
        seconds[turn.speaker] = seconds.get(turn.speaker, 0.0) + turn.end - turn.start
        if turn.speaker != previous:
            counts[turn.speaker] = counts.get(turn.speaker, 0) + 1
        previous = turn.speaker
    return [
        SpeakerSummary(speaker=name, seconds=round(total, 3), turns=counts[name]) for name, total in seconds.items()
    ]


class _Finder:
    """Who speaks over a span of time."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self.turns = sorted(turns, key=lambda turn: turn.start)
        self.starts = [turn.start for turn in self.turns]

    def speaker(self, start: float, end: float) -> str:
        """The speaker whose turns overlap the span most; else the speaker of the nearest turn."""
        near = bisect.bisect_right(self.starts, end)
        overlaps: dict[str, float] = {}
        for turn in self.turns[max(0, near - 8) : near]:
            overlap = min(end, turn.end) - max(start, turn.start)
            if overlap > 0:
                overlaps[turn.speaker] = overlaps.get(turn.speaker, 0.0) + overlap
        if overlaps:
            return max(overlaps, key=lambda name: overlaps[name])
        middle = (start + end) / 2
        candidates = self.turns[max(0, near - 1) : near + 1]
        return min(candidates, key=lambda turn: max(turn.start - middle, middle - turn.end, 0.0)).speaker


def _split(segment: Segment, finder: _Finder, tokenize: Tokenize) -> list[Segment]:
    timed = _words(segment)
    if not timed:
        return [segment.model_copy(update={"speaker": finder.speaker(segment.start, segment.end)})]
    speakers = _smoothed([finder.speaker(word.start, word.end) for word in timed])
    words = None
    if segment.words is not None:
        words = [word.model_copy(update={"speaker": who}) for word, who in zip(segment.words, speakers, strict=True)]
    runs = _runs(speakers)
    if len(runs) == 1:
        return [segment.model_copy(update={"speaker": speakers[0], "words": words})]
    pieces = []
    for number, (first, last) in enumerate(runs):
        text = "".join(word.text for word in timed[first : last + 1])
        pieces.append(
            segment.model_copy(
                update={
                    "start": segment.start if number == 0 else timed[first].start,
                    "end": segment.end if number == len(runs) - 1 else timed[last].end,
                    "text": text,
                    "tokens": tokenize(text),
                    "speaker": speakers[first],
                    "words": words[first : last + 1] if words is not None else None,
                }
            )
        )
    return pieces


def _words(segment: Segment) -> list[_Timed]:
    """The segment's words with their times, or its text's words spread evenly by length over its time."""
    if segment.words:
        return [_Timed(word.start, word.end, word.word) for word in segment.words]
    parts = re.findall(r"\s*\S+\s*$|\s*\S+", segment.text)
    total = sum(len(part) for part in parts)
    timed, at = [], segment.start
    for part in parts:
        length = (segment.end - segment.start) * len(part) / total
        timed.append(_Timed(round(at, 3), round(at + length, 3), part))
        at += length
    return timed


def _smoothed(speakers: list[str]) -> list[str]:
    """A lone word between two words of one other speaker takes theirs."""
    smoothed = list(speakers)
    for index in range(1, len(speakers) - 1):
        before, after = speakers[index - 1], speakers[index + 1]
        if before == after != speakers[index]:
            smoothed[index] = before
    return smoothed


def _runs(speakers: list[str]) -> list[tuple[int, int]]:
    """First and last index of each stretch of one speaker."""
    runs: list[tuple[int, int]] = []
    for index, speaker in enumerate(speakers):
        if runs and speakers[runs[-1][0]] == speaker:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs

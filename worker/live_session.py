"""One live session on a worker: audio in, turns found by server VAD, text decoded and settled, events out.

The session only keeps state and says what it wants decoded; the live server (worker/live.py) picks the most urgent
decode among all its sessions, runs it, and hands the text back. Every decode is of a whole turn so far, with the
settings a final uses, so the last one before a turn ends is usually its final already.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.live import Event, LiveConfig
from worker.streaming import FRAME, RATE, LocalAgreement, Pcm16Input, SpeechFrames, TurnDetector, joined

Emit = Callable[..., None]
# A partial decode waits for this much new audio, and a turn's first for this much of it: Whisper guesses on less.
PARTIAL_EVERY_S = 0.5
FIRST_PARTIAL_S = 0.6
# Once a turn's first words have settled, partials come less often: the decoder then has room, so that the decode
# made at a pause rarely waits behind a partial.
LATER_PARTIAL_EVERY_S = 1.0
# A pause this long starts the decode that will likely be the turn's final.
TENTATIVE_AFTER_MS = 96
# A turn is closed at this length, and the next begins at once: decodes stay within one window.
MAX_TURN_S = 28.0
# Text of earlier turns given as the prompt, at most this many characters.
PROMPT_CHARS = 400


@dataclass
class Turn:
    """The audio of one utterance (an item) and what has been decoded of it."""

    item: str
    start: int  # sample index in the session's audio (16 kHz)
    speech_end: int = 0  # end of its last speech frame
    speech_end_at: float = 0.0  # when that audio arrived (wall clock), for the latency figure
    end: int | None = None  # set when the turn is committed
    decoded_to: int = 0  # end of the audio the latest decode covered
    partials: int = 0  # decodes made of it while it is spoken
    best: tuple[int, str, str] | None = None  # the latest decode: (its end, its text, its language)
    agreement: LocalAgreement = field(default_factory=LocalAgreement)

    @property
    def said(self) -> list[str]:
        """Words already sent as deltas."""
        return self.agreement.settled


# How urgent a decode is: a committed turn's final, then one made at a pause (likely the final), then a partial.
FINAL, AT_PAUSE, PARTIAL = 0, 1, 2


@dataclass(frozen=True)
class DecodeJob:
    """Audio of one turn to decode, with its urgency."""

    session: LiveSession
    item: str
    start: int
    end: int
    urgency: int
    beam: int  # 5, as batch decoding, for what may stand as a final and for a turn's first words; else greedy
    prompt: str
    since: float  # when it became due, to serve the oldest first


class LiveSession:
    """The state of one session; every change comes from the live server's one thread."""

    def __init__(self, session_id: str, config: LiveConfig, emit: Emit) -> None:
        self.id = session_id
        self.emit = emit
        self.audio = np.zeros(0, np.float32)
        self.offset = 0  # session sample index of audio[0]
        self.received = 0  # samples received in all
        self.scored = 0  # samples the VAD has scored
        self.committed_to = 0  # end of the last committed turn
        self.turn: Turn | None = None  # the turn being spoken
        self.closing: list[Turn] = []  # committed turns waiting for their final text
        self.previous_item: str | None = None
        self.history = ""
        self.language: str | None = None
        self.audio_s = 0.0
        self.latencies: list[float] = []
        self._apply(config)

    # -- commands -------------------------------------------------------------------------------------------------

    def configure(self, config: LiveConfig) -> None:
        """New settings; a change of sample rate applies to the audio that follows."""
        self._apply(config)

    def _apply(self, config: LiveConfig) -> None:
        previous = getattr(self, "config", None)
        self.config = config
        if previous is None or previous.rate != config.rate:
            self.input = Pcm16Input(config.rate)
        if previous is None or previous.turn_detection != config.turn_detection:
            self.frames = SpeechFrames() if config.turn_detection is not None else None
            self.scored = self.received
            self.detector = TurnDetector(config.turn_detection) if config.turn_detection is not None else None

    def append(self, pcm: bytes, arrived: float) -> None:
        """New audio: kept, and run through the VAD when the session has turn detection."""
        samples = self.input.samples(pcm)
        start = self.received
        self.audio = np.concatenate([self.audio, samples])
        self.received += len(samples)
        self.audio_s += len(pcm) / 2 / self.config.rate
        if self.frames is None:
            if self.turn is None:
                self.turn = Turn(self._new_item(), start)
            self.turn.speech_end, self.turn.speech_end_at = self.received, arrived
        else:
            self._detect(self.frames.feed(samples), arrived)
        self._trim()

    def _detect(self, probabilities: np.ndarray, arrived: float) -> None:
        assert self.detector is not None
        first, self.scored = self.scored, self.scored + len(probabilities) * FRAME
        for number, probability in enumerate(probabilities):
            frame_start = first + number * FRAME
            happened = self.detector.frame(float(probability))
            if happened == "start":
                self._start_turn(frame_start)
            elif happened == "stop":
                self.commit(frame_start + FRAME)
            if self.turn is not None and probability >= self.detector.settings.threshold:
                self.turn.speech_end, self.turn.speech_end_at = frame_start + FRAME, arrived
            if self.turn is not None and frame_start + FRAME - self.turn.start >= MAX_TURN_S * RATE:
                self.commit(frame_start + FRAME)
                self._start_turn(frame_start + FRAME, padding=False)

    def _start_turn(self, at: int, padding: bool = True) -> None:
        assert self.config.turn_detection is not None
        pad = self.config.turn_detection.prefix_padding_ms * RATE // 1000 if padding else 0
        start = max(self.offset, self.committed_to, at - pad)  # the padding never reaches into the turn before
        self.turn = Turn(self._new_item(), start, speech_end=at)
        self.emit(Event.STARTED, item=self.turn.item, audio_start_ms=self._ms(self.turn.start))

    def commit(self, at: int | None = None) -> None:
        """End the turn being spoken (by VAD at `at`, or by the client); its final text follows."""
        turn = self.turn
        if turn is None or (at is None and self.received <= turn.start):
            self.emit(
                Event.ERROR, code="input_audio_buffer_commit_empty", message="the buffer holds no speech to commit"
            )
            return
        self.turn = None
        turn.end = at if at is not None else self.received
        self.committed_to = turn.end
        if at is not None:
            self.emit(Event.STOPPED, item=turn.item, audio_end_ms=self._ms(turn.end))
        elif self.detector is not None and self.detector.speaking:
            self.detector.speaking = False  # a client commit ends the speech the VAD was following
        self.emit(Event.COMMITTED, item=turn.item, previous_item=self.previous_item)
        self.previous_item = turn.item
        self.closing.append(turn)
        self._finish_ready()

    def clear(self) -> None:
        """Drop the audio not yet committed."""
        self.turn = None
        if self.detector is not None:
            self.detector.speaking = False
        self._trim()
        self.emit(Event.CLEARED)

    # -- decoding -------------------------------------------------------------------------------------------------

    def wanted(self, now: float) -> DecodeJob | None:
        """The decode this session needs most: a committed turn's final, else a partial of the turn being spoken."""
        if self.closing:
            turn = self.closing[0]
            return self._job(turn, turn.end or self.received, FINAL, since=turn.speech_end_at)
        spoken = self.turn
        if spoken is None or self.detector is None:
            return None  # without server VAD, text comes when the client commits
        pausing = self.detector.silent_ms >= TENTATIVE_AFTER_MS and spoken.decoded_to < spoken.speech_end
        if self.received - spoken.start < FIRST_PARTIAL_S * RATE:
            return None
        if pausing:
            return self._job(spoken, self.received, AT_PAUSE, since=spoken.speech_end_at)
        every = PARTIAL_EVERY_S if spoken.partials < 2 else LATER_PARTIAL_EVERY_S
        if self.detector.silent_ms == 0 and self.received - max(spoken.decoded_to, spoken.start) >= every * RATE:
            return self._job(spoken, self.received, PARTIAL, since=spoken.speech_end_at)
        return None

    def _job(self, turn: Turn, end: int, urgency: int, since: float) -> DecodeJob:
        prompt = " ".join(part for part in (self.config.prompt, self.history[-PROMPT_CHARS:]) if part)
        beam = 5 if urgency < PARTIAL or turn.partials < 2 else 1
        return DecodeJob(self, turn.item, turn.start, end, urgency, beam, prompt, since)

    def samples(self, job: DecodeJob) -> np.ndarray:
        """The audio a job decodes."""
        return self.audio[job.start - self.offset : job.end - self.offset]

    def decoded(self, job: DecodeJob, text: str, language: str) -> None:
        """A decode's text: words that settle go out as deltas; a turn whose text is final completes."""
        turn = next((t for t in [*self.closing, self.turn] if t is not None and t.item == job.item), None)
        if turn is None:
            return  # cleared meanwhile
        turn.decoded_to = max(turn.decoded_to, job.end)
        if job.beam == 5:  # only a decode with a final's settings may stand as the final
            turn.best = (job.end, text, language)
        if turn.end is None:
            turn.partials += 1
            settled = turn.agreement.update(text.split())
            before = turn.said[: len(turn.said) - len(settled)]
            if settled:
                self.emit(Event.DELTA, item=turn.item, delta=joined(settled, before))
        self._finish_ready()

    def _finish_ready(self) -> None:
        """Complete, in order, the committed turns whose latest decode covers all their speech."""
        while self.closing:
            turn = self.closing[0]
            if turn.best is None or turn.best[0] < turn.speech_end:
                return
            self.closing.pop(0)
            self._complete(turn, turn.best[1], turn.best[2])

    def _complete(self, turn: Turn, text: str, language: str) -> None:
        rest = turn.agreement.rest(text.split())
        if rest:
            self.emit(Event.DELTA, item=turn.item, delta=joined(rest, turn.said))
        latency = max(0.0, time.time() - turn.speech_end_at) if turn.speech_end_at else 0.0
        self.latencies.append(latency)
        audio_s = ((turn.end or turn.start) - turn.start) / RATE
        self.emit(
            Event.COMPLETED,
            item=turn.item,
            transcript=text,
            language=language,
            audio_s=audio_s,
            latency_s=round(latency, 3),
        )
        self.history = f"{self.history} {text}".strip()[-PROMPT_CHARS:]
        self.language = language
        self._trim()

    # -- housekeeping ---------------------------------------------------------------------------------------------

    def _trim(self) -> None:
        """Keep only audio a turn still needs, or the prefix padding a new turn would take."""
        needed = [t.start for t in [*self.closing, self.turn] if t is not None]
        pad = self.config.turn_detection.prefix_padding_ms if self.config.turn_detection else 0
        keep_from = min(needed) if needed else self.received - pad * RATE // 1000 - FRAME
        drop = max(0, keep_from - self.offset)
        if drop:
            self.audio = self.audio[drop:]
            self.offset += drop

    def _new_item(self) -> str:
        return f"item_{uuid.uuid4().hex[:20]}"

    def _ms(self, sample: int) -> int:
        return sample * 1000 // RATE

    def summary(self) -> dict[str, Any]:
        """Figures for the log when the session ends."""
        return {"audio_s": round(self.audio_s, 1), "turns": len(self.latencies)}

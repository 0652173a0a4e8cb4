"""The pieces of live transcription that need no Redis: audio in, speech frames, turns, and text that settles."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from shared.live import TurnDetection

RATE = 16000
FRAME = 512  # Silero VAD's frame at 16 kHz: 32 ms
FRAME_MS = FRAME * 1000 // RATE


class Pcm16Input:
    """PCM16 mono at 16 or 24 kHz, as it arrives, to 16 kHz float samples (FFmpeg's resampler, state kept)."""

    def __init__(self, rate: int) -> None:
        import av

        self.rate = rate
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE) if rate != RATE else None
        self._pts = 0

    def samples(self, pcm: bytes) -> np.ndarray:
        """The 16 kHz samples of these bytes (an even number of them)."""
        ints = np.frombuffer(pcm, dtype="<i2")
        if self._resampler is None:
            return ints.astype(np.float32) / 32768.0
        import av

        frame = av.AudioFrame.from_ndarray(ints.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += len(ints)
        parts = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


class SpeechFrames:
    """Silero's speech probability of each 32-ms frame of 16 kHz audio, fed as it arrives.

    faster-whisper's Silero model runs a recurrent state through the frames of one call; it is carried from call to
    call here, with each frame's 64 samples of context, so that frames fed in pieces score as a whole file's do.
    """

    CONTEXT = 64

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self._pending = np.zeros(0, np.float32)
        self._context = np.zeros(self.CONTEXT, np.float32)
        self._h = np.zeros((1, 1, 128), np.float32)
        self._c = np.zeros((1, 1, 128), np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities of the whole frames completed by these samples (a partial frame waits for the next call)."""
        pending = np.concatenate([self._pending, samples.astype(np.float32)])
        whole = len(pending) // FRAME * FRAME
        frames, self._pending = pending[:whole].reshape(-1, FRAME), pending[whole:]
        if whole == 0:
            return np.zeros(0, np.float32)
        contexts = np.concatenate([self._context[None, :], frames[:-1, -self.CONTEXT :]])
        self._context = frames[-1, -self.CONTEXT :].copy()
        batch = np.concatenate([contexts, frames], axis=1)
        output, self._h, self._c = self._session.run(None, {"input": batch, "h": self._h, "c": self._c})
        return np.asarray(output, np.float32).reshape(-1)


class TurnDetector:
    """Server VAD over frame probabilities: speech starts at a frame over the threshold and stops after
    `silence_duration_ms` of frames under it (less a margin, so a wavering frame does not end a turn)."""

    def __init__(self, settings: TurnDetection) -> None:
        self.settings = settings
        self.speaking = False
        self._silent_frames = 0
        self._low = max(settings.threshold - 0.15, 0.01)

    def frame(self, probability: float) -> str | None:
        """'start', 'stop' or None for the next frame."""
        if not self.speaking:
            if probability >= self.settings.threshold:
                self.speaking, self._silent_frames = True, 0
                return "start"
            return None
        self._silent_frames = self._silent_frames + 1 if probability < self._low else 0
        if self._silent_frames * FRAME_MS >= self.settings.silence_duration_ms:
            self.speaking = False
            return "stop"
        return None

    @property
    def silent_ms(self) -> int:
        """How long the speech has paused, while speaking."""
        return self._silent_frames * FRAME_MS


_PUNCTUATION = re.compile(r"[^\w']+")


def _norm(word: str) -> str:
    return _PUNCTUATION.sub("", word.lower())


class LocalAgreement:
    """LocalAgreement-2 (as whisper_streaming): a word settles once two decodes in a row agree on it and on every word
    before it. Settled words are never taken back."""

    def __init__(self) -> None:
        self.settled: list[str] = []
        self._previous: list[str] | None = None

    def update(self, words: list[str]) -> list[str]:
        """The words this hypothesis settles."""
        previous, self._previous = self._previous, words
        if previous is None or not _same(words[: len(self.settled)], self.settled):
            return []
        agreed = len(self.settled)
        while agreed < min(len(words), len(previous)) and _norm(words[agreed]) == _norm(previous[agreed]):
            agreed += 1
        new = words[len(self.settled) : agreed]
        self.settled.extend(new)
        return new

    def rest(self, final: list[str]) -> list[str]:
        """The words of the final text after those already settled; none if the final does not start with them."""
        return final[len(self.settled) :] if _same(final[: len(self.settled)], self.settled) else []


def _same(a: list[str], b: list[str]) -> bool:
    return len(a) == len(b) and all(_norm(x) == _norm(y) for x, y in zip(a, b, strict=True))


def joined(words: list[str], after: list[str]) -> str:
    """Words as a delta that follows `after` (a space between them)."""
    text = " ".join(words)
    return f" {text}" if after and text else text


def decode(model: Any, samples: np.ndarray, language: str | None, prompt: str | None, beam: int) -> tuple[str, str]:
    """The text of one turn's audio (no timestamps) and its language."""
    segments, info = model.transcribe(
        samples,
        language=language,
        initial_prompt=prompt or None,
        beam_size=beam,
        without_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
    )
    return "".join(segment.text for segment in segments).strip(), str(info.language)

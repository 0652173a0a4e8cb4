"""Whisper's invented text on non-speech: a segment Whisper is unsure of, where the VAD hears no voice, is dropped.

Whisper writes text on music, tones, noise and silence ("Mmm." on a cartoon's sound track, "You" on a silence, loops
of made-up sentences on screaming monkeys). Whisper's own signals and Silero VAD's together tell that text from real
speech (README, No invented text, measures them on the data set's non-speech clips and its spoken digits). A segment
Whisper is unsure of (it failed one of the checks on which Whisper decodes again hotter, an average log-probability
under -1 or a gzip compression ratio over 2.4, a repetition loop; or it passed them only when sampled hotter) is
dropped where
- the VAD hears no voice near it (speech probability under its threshold of 0.5 throughout);
- its text is hesitation sounds only ("Mmm.", "Hmm", "uh": the fillers Whisper's English normaliser removes);
- or most of its time lies past the end of the audio (well past: Whisper ends a short clip's segment up to a second
  or so late), where there was nothing to hear.
A segment Whisper judges silent (no-speech probability over 0.6) is dropped where the VAD hears next to nothing
(under 0.2), however sure Whisper is of its text.
No signal alone will do: the VAD scores some clearly spoken digits at 8 kHz under its threshold, Whisper gives short
clear words a no-speech probability over 0.6 and reads them only at its last fallback temperature, and the VAD hears
a voice in a cartoon's hum. The VAD runs only on audio where Whisper is unsure of a segment or judges it silent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from shared.schemas import Segment, TranscribeOptions

RATE = 16_000
# Silero VAD's frame, in samples.
FRAME = 512
# The VAD listens this far either side of a segment: Whisper's times are rounded to 20 ms and often early or late.
MARGIN_S = 0.2
UNSURE_LOGPROB = -1.0
REPEATING = 2.4
NO_VOICE = 0.5
# Whisper ends a short clip's segment up to a second or so after the audio does.
OVERRUN_S = 1.5
# Hesitation sounds, as Whisper's English normaliser finds them (whisper_normalizer's EnglishTextNormalizer).
FILLERS = re.compile(r"\b(hmm|mm|mhm|mmm|uh|um)\b", re.IGNORECASE)
SILENT_NO_SPEECH = 0.6
SILENT_VOICE = 0.2


class Listener:
    """Silero VAD's speech probabilities over one piece of audio, computed once, the first time they are asked for.

    The whole piece is scored in one pass (a few hundred times faster than real time on one core), as the VAD is
    meant to run: over a short slice alone it starts without context and scores the same sound differently.
    """

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples
        self.duration = len(samples) / RATE
        self._probabilities: np.ndarray | None = None

    def voice(self, start: float, end: float) -> float:
        """The highest speech probability from MARGIN_S before `start` to MARGIN_S after `end` (seconds)."""
        probabilities = self._scored()
        first = max(0, math.floor((start - MARGIN_S) * RATE / FRAME))
        last = min(len(probabilities), math.ceil((end + MARGIN_S) * RATE / FRAME))
        return float(np.max(probabilities[first:last])) if last > first else 0.0

    def _scored(self) -> np.ndarray:
        if self._probabilities is None:
            from faster_whisper.vad import get_vad_model

            samples = np.asarray(self.samples, dtype=np.float32)
            self._probabilities = np.asarray(get_vad_model()(np.pad(samples, (0, -len(samples) % FRAME)))).ravel()
        return self._probabilities


def invented(segment: Segment, listener: Listener, first_temperature: float = 0.0) -> bool:
    """True if the segment is text Whisper made up on non-speech (the module's rules)."""
    fell_back = segment.temperature is not None and segment.temperature > first_temperature
    if fell_back or segment.avg_logprob < UNSURE_LOGPROB or segment.compression_ratio > REPEATING:
        return (
            _fillers_only(segment.text)
            or _mostly_past(segment, listener.duration)
            or listener.voice(segment.start, segment.end) < NO_VOICE
        )
    if segment.no_speech_prob > SILENT_NO_SPEECH:
        return listener.voice(segment.start, segment.end) < SILENT_VOICE
    return False


def _fillers_only(text: str) -> bool:
    return not re.sub(r"[\W_]+", "", FILLERS.sub("", text))


def _mostly_past(segment: Segment, duration: float) -> bool:
    """True if most of the segment, and more than Whisper's timestamps overrun a short clip by, lies past the end."""
    past = segment.end - max(segment.start, duration)
    return past > OVERRUN_S and past > (segment.end - segment.start) / 2


def keeper(samples: np.ndarray, options: TranscribeOptions) -> Callable[[Segment], bool]:
    """A test for segments of this audio decoded with these options: True to keep one (all unless the task drops
    non-speech)."""
    if not options.drop_nonspeech:
        return lambda _segment: True
    listener = Listener(samples)
    return lambda segment: not invented(segment, listener, options.temperature[0])

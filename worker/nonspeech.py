"""Whisper's invented text on non-speech: a segment Whisper is unsure of, where the VAD hears no voice, is dropped.

Whisper writes text on music, tones, noise and silence ("Mmm." on a cartoon's sound track, "You" on a silence, loops
of made-up sentences on screaming monkeys). Whisper's own signals and Silero VAD's together tell that text from real
speech (README, No invented text, measures them on the data set's non-speech clips and its spoken digits). A segment
is dropped where
- Whisper is unsure of it (it fails one of the checks on which Whisper decodes again hotter, an average
  log-probability under -1 or a gzip compression ratio over 2.4, a repetition loop; or it passed them only when
  sampled hotter) and the VAD hears no voice near it (speech probability under its threshold of 0.5 throughout);
- Whisper is unsure of it and leans to silence (no-speech probability over 0.5): its own rule for skipping a
  window (over 0.6 and unsure), a little stricter, since a failed decode's text is sampled at random;
- or Whisper judges the audio silent (no-speech probability over 0.6) and the VAD hears next to nothing (under 0.2).
No signal alone will do: single words at 8 kHz score under the VAD's threshold, short clear words over Whisper's
no-speech threshold, and the VAD hears a voice in a cartoon's sound effects. The VAD runs only on audio where Whisper
is unsure of a segment or judges it silent.
"""

from __future__ import annotations

import math
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
LEANS_SILENT = 0.5
SILENT_NO_SPEECH = 0.6
SILENT_VOICE = 0.2


class Listener:
    """Silero VAD's speech probabilities over one piece of audio, computed once, the first time they are asked for.

    The whole piece is scored in one pass (a few hundred times faster than real time on one core), as the VAD is
    meant to run: over a short slice alone it starts without context and scores the same sound differently.
    """

    def __init__(self, samples: np.ndarray) -> None:
        self.samples = samples
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
    """True if the segment is text Whisper made up on non-speech (the module's three rules)."""
    fell_back = segment.temperature is not None and segment.temperature > first_temperature
    unsure = fell_back or segment.avg_logprob < UNSURE_LOGPROB or segment.compression_ratio > REPEATING
    if unsure:
        return segment.no_speech_prob > LEANS_SILENT or listener.voice(segment.start, segment.end) < NO_VOICE
    if segment.no_speech_prob > SILENT_NO_SPEECH:
        return listener.voice(segment.start, segment.end) < SILENT_VOICE
    return False


def keeper(samples: np.ndarray, options: TranscribeOptions) -> Callable[[Segment], bool]:
    """A test for segments of this audio decoded with these options: True to keep one (all unless the task drops
    non-speech)."""
    if not options.drop_nonspeech:
        return lambda _segment: True
    listener = Listener(samples)
    return lambda segment: not invented(segment, listener, options.temperature[0])

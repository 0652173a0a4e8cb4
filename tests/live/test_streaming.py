"""The worker's live pieces on real speech: speech frames fed in pieces, turns, resampling, settling text."""

from __future__ import annotations

import numpy as np

from shared.live import TurnDetection
from tests.live.conftest import JFK, pcm16
from worker.streaming import FRAME, LocalAgreement, Pcm16Input, SpeechFrames, TurnDetector, joined


def _jfk() -> np.ndarray:
    from faster_whisper import decode_audio

    return decode_audio(str(JFK))


def test_speech_frames_fed_in_odd_pieces_score_as_the_whole_file() -> None:
    from faster_whisper.vad import get_vad_model

    audio = _jfk()
    whole = len(audio) // FRAME * FRAME
    expected = np.asarray(get_vad_model()(audio[:whole])).reshape(-1)
    frames = SpeechFrames()
    pieces = [frames.feed(audio[start : start + 700]) for start in range(0, whole, 700)]
    assert np.abs(np.concatenate(pieces)[: len(expected)] - expected).max() < 1e-5


def test_turns_start_at_speech_and_stop_after_the_silence() -> None:
    frames = SpeechFrames().feed(np.concatenate([np.zeros(16000, np.float32), _jfk(), np.zeros(32000, np.float32)]))
    long_pauses = TurnDetector(TurnDetection(silence_duration_ms=1500))
    changes = [(number * FRAME / 16000, change) for number, p in enumerate(frames) if (change := long_pauses.frame(p))]
    assert [change for _, change in changes] == ["start", "stop"]
    assert 1.0 <= changes[0][0] <= 1.6 and changes[1][0] >= 12.0  # JFK speaks from about 0.35 s to 11 s
    short_pauses = TurnDetector(TurnDetection(silence_duration_ms=300))
    assert sum(short_pauses.frame(p) == "start" for p in frames) >= 3  # JFK's pauses between phrases


def test_24_khz_audio_is_resampled_to_16_khz() -> None:
    reference = _jfk()
    source = Pcm16Input(24000)
    pcm = pcm16(JFK, 24000)
    out = np.concatenate([source.samples(pcm[i : i + 9600]) for i in range(0, len(pcm), 9600)])
    assert abs(len(out) - len(reference)) < 100
    n = min(len(out), len(reference)) - 200
    assert np.corrcoef(reference[:n], out[:n])[0, 1] > 0.99


def test_words_settle_when_two_decodes_agree_and_are_never_taken_back() -> None:
    agreement = LocalAgreement()
    assert agreement.update("And so am I".split()) == []
    assert agreement.update("And so my fellow".split()) == ["And", "so"]  # "my" against "am": not yet
    assert agreement.update("And so my fellow Americans,".split()) == ["my", "fellow"]
    assert agreement.update("And so my fellow Americans, ask".split()) == ["Americans,"]
    assert agreement.update("Ann so my".split()) == []  # disagrees with settled words: nothing more settles
    assert agreement.settled == ["And", "so", "my", "fellow", "Americans,"]
    assert agreement.rest("And so my fellow Americans, ask not".split()) == ["ask", "not"]
    assert agreement.rest("Ann so".split()) == []
    assert joined(["ask", "not"], agreement.settled) == " ask not" and joined(["And"], []) == "And"

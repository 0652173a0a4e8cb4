"""No invented text: what Whisper writes on a cartoon's music and effects or on silence is dropped by default, while
single spoken words the VAD hears only faintly come back. (The benchmark, `python -m benchmark.nonspeech`, runs
every non-speech clip of the data set: tones, silences, screaming monkeys.)"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from benchmark.scoring import normalise
from shared.enums import TaskType
from shared.schemas import TranscribeOptions
from shared.settings import Settings
from tests.conftest import DATA, JFK, submit
from worker import splitting
from worker.engine import Engine, load_engine, transcribe
from worker.windows import Window, decode

VIDEO = DATA / "video" / "big_buck_bunny_small_nospeech.mp4"  # 5 s of a cartoon's music and effects
SILENCE = DATA / "audio" / "asterisk" / "en" / "silence__2.opus"  # 2 s of silence: base writes "You"
# The spoken digits Silero VAD scores lowest (8 kHz, under its speech threshold of 0.5), which tiny.en reads right:
# the clips a test on the VAD alone would lose.
FAINT_DIGITS = {"2_yweweler_0.wav": "two", "3_jackson_3.wav": "three", "8_george_3.wav": "eight"}


def words(text: str) -> list[str]:
    """The words in a text; Whisper's basic normaliser keeps fillers such as "Mmm", which its English one drops."""
    return normalise(text, None).split()


def tiny(settings: Settings, model: str = "tiny.en") -> Engine:
    return load_engine(settings.model_copy(update={"model": model}))


def text_of(engine: Engine, path: Path, **fields: Any) -> str:
    options = TranscribeOptions(language="en", **fields)
    transcript = transcribe(engine, path, TaskType.TRANSCRIBE, options, lambda *_: None)
    assert [segment.id for segment in transcript.segments] == list(range(1, len(transcript.segments) + 1))
    return transcript.text


@pytest.mark.parametrize(("model", "path"), [("tiny.en", VIDEO), ("base", SILENCE)], ids=["cartoon", "silence"])
def test_text_made_up_on_non_speech_is_dropped(settings: Settings, model: str, path: Path) -> None:
    engine = tiny(settings, model)
    made_up = text_of(engine, path, drop_nonspeech=False)
    assert words(made_up), f"{model} writes text here when nothing is dropped (the check can fail)"
    assert text_of(engine, path) == ""


def test_a_window_of_a_long_file_drops_made_up_text_too(settings: Settings) -> None:
    engine = tiny(settings, "base")
    samples = splitting.decode(SILENCE, 60)
    options = TranscribeOptions(language="en")
    # The option is applied after decoding: windows that differ in it share one batch.
    windows = [
        Window(samples, TaskType.TRANSCRIBE, "en", options.model_copy(update={"drop_nonspeech": drop}))
        for drop in (False, True)
    ]
    kept, dropped = decode(engine, windows)
    assert words(" ".join(segment.text for segment in kept)), "the window's text is made up, not nothing"
    assert dropped == []


def test_single_words_the_vad_hears_faintly_come_back(settings: Settings) -> None:
    engine = tiny(settings)
    for name, spoken in FAINT_DIGITS.items():
        path = DATA / "audio" / "fsdd" / name
        kept, all_text = text_of(engine, path), text_of(engine, path, drop_nonspeech=False)
        assert normalise(kept, "en") == normalise(all_text, "en") == normalise(spoken, "en"), name


def test_the_service_drops_made_up_text_unless_asked_to_keep_it(
    api: httpx.Client, served: Callable[[str], None], run_worker: Callable[[str], subprocess.CompletedProcess[str]]
) -> None:
    served("base")
    assert submit(api, SILENCE, model="base", drop_nonspeech="maybe").status_code == 422
    dropped = submit(api, SILENCE, model="base").json()["id"]
    kept = submit(api, SILENCE, model="base", drop_nonspeech="false").json()["id"]
    speech = submit(api, JFK, model="base").json()["id"]
    run_worker("base")
    results = {
        name: api.get(f"/v1/tasks/{task_id}").json()
        for name, task_id in [("dropped", dropped), ("kept", kept), ("speech", speech)]
    }
    assert all(body["status"] == "completed" for body in results.values()), results
    assert results["dropped"]["result"]["text"] == "" and results["dropped"]["result"]["segments"] == []
    assert words(results["kept"]["result"]["text"]), "the option reaches the worker: its text is kept"
    assert "ask not what your country" in results["speech"]["result"]["text"]

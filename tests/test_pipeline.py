"""End to end on real parts: the API, a real worker process in burst mode, the bundled models, real speech."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import jiwer
import pytest
from whisper_normalizer.english import EnglishTextNormalizer

from shared.settings import Settings
from tests.conftest import DATA, JFK, manifest, submit

pytestmark = pytest.mark.slow

RunWorker = Callable[[str], subprocess.CompletedProcess[str]]
SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


def seconds(match: tuple[str, ...]) -> float:
    hours, minutes, secs, millis = (int(part) for part in match)
    return hours * 3600 + minutes * 60 + secs + millis / 1000


def cue_times(body: str, pattern: str) -> list[tuple[float, float]]:
    cues = re.findall(rf"^{pattern} --> {pattern}$", body, flags=re.MULTILINE)
    return [(seconds(cue[:4]), seconds(cue[4:])) for cue in cues]


def assert_times_increase(times: list[tuple[float, float]]) -> None:
    assert times, "no cues"
    for start, end in times:
        assert start < end
    for (_, end), (start, _) in zip(times, times[1:], strict=False):
        assert end <= start + 1e-3


def task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    response = api.get(f"/v1/tasks/{task_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def test_jfk_through_the_api_is_transcribed_correctly(
    api: httpx.Client, served: Callable[[str], None], run_worker: RunWorker, settings: Settings
) -> None:
    served("tiny.en")
    task_id = submit(api, JFK, task_type="transcribe").json()["id"]
    run_worker("tiny.en")

    done = task(api, task_id)
    assert done["status"] == "completed", done["error"]
    normalise = EnglishTextNormalizer()
    reference = manifest()["fw_jfk"]["reference"]
    wer = jiwer.wer(normalise(reference), normalise(done["result"]["text"]))
    assert wer <= 0.10, done["result"]["text"]
    assert done["progress"] == 1.0 and done["attempts"] == 1 and done["worker"]
    assert done["language"] == "en" and done["language_probability"] > 0.5
    assert done["duration"] == pytest.approx(11.0, abs=0.1)
    assert 0 < done["processing_seconds"] and done["real_time_factor"] == pytest.approx(
        done["processing_seconds"] / done["duration"], rel=0.01
    )
    created, started, finished = (datetime.fromisoformat(done[k]) for k in ("created_at", "started_at", "finished_at"))
    assert created <= started <= finished
    assert done["queue_position"] is None and done["error"] is None
    assert list(settings.uploads.iterdir()) == [], "the upload is removed once the task ends"


def test_result_formats_parse_and_times_increase(
    api: httpx.Client, served: Callable[[str], None], run_worker: RunWorker
) -> None:
    served("tiny.en")
    clip = DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"
    task_id = submit(api, clip, word_timestamps="true", clip_timestamps="0,30").json()["id"]
    run_worker("tiny.en")
    assert task(api, task_id)["status"] == "completed"

    def fetch(fmt: str) -> httpx.Response:
        response = api.get(f"/v1/tasks/{task_id}/result", params={"format": fmt})
        assert response.status_code == 200
        return response

    srt = fetch("srt")
    assert srt.headers["content-type"].startswith("application/x-subrip")
    srt_times = cue_times(srt.text, SRT_TIME)
    assert len(srt_times) >= 3 and srt_times[-1][1] <= 30.5
    assert_times_increase(srt_times)
    assert srt.text.startswith("1\n") and re.search(r"^2$", srt.text, flags=re.MULTILINE)

    vtt = fetch("vtt")
    assert vtt.headers["content-type"].startswith("text/vtt") and vtt.text.startswith("WEBVTT\n\n")
    assert cue_times(vtt.text, VTT_TIME) == srt_times

    tsv = fetch("tsv").text.splitlines()
    assert tsv[0] == "start\tend\ttext" and len(tsv) == len(srt_times) + 1
    assert int(tsv[1].split("\t")[0]) == round(srt_times[0][0] * 1000)

    text = fetch("text")
    assert text.headers["content-type"].startswith("text/plain") and "printing" in text.text.lower()

    verbose = fetch("verbose_json").json()
    assert verbose["task"] == "transcribe" and verbose["language"] == "english"
    assert {
        "id",
        "seek",
        "start",
        "end",
        "text",
        "tokens",
        "temperature",
        "avg_logprob",
        "compression_ratio",
        "no_speech_prob",
    } <= set(verbose["segments"][0])
    assert verbose["words"] and all(w["start"] <= w["end"] for w in verbose["words"])

    own = fetch("json").json()
    assert own["text"] == verbose["text"] and own["segments"][0]["words"]


def test_spanish_translated_to_english(api: httpx.Client, served: Callable[[str], None], run_worker: RunWorker) -> None:
    served("base")
    clip = DATA / "audio" / "picovoice_cheetah" / "test_es_norm.wav"
    translated = submit(api, clip, model="base", task_type="translate").json()["id"]
    transcribed = submit(api, clip, model="base", task_type="transcribe").json()["id"]
    run_worker("base")

    english, spanish = task(api, translated), task(api, transcribed)
    assert english["status"] == spanish["status"] == "completed"
    assert english["language"] == "es" and english["result"]["task"] == "translate"
    english_words = set(re.findall(r"[a-z]+", english["result"]["text"].lower()))
    assert {"my", "favorite", "number"} <= english_words, english["result"]["text"]
    assert "número" in spanish["result"]["text"].lower() or "numero" in spanish["result"]["text"].lower()


def test_high_priority_runs_before_normal_and_low_enqueued_earlier(
    api: httpx.Client, served: Callable[[str], None], run_worker: RunWorker
) -> None:
    served("tiny.en")
    clips = [DATA / "audio" / "fsdd" / f"{digit}_jackson_0.wav" for digit in range(6)]
    order = ["low", "low", "normal", "normal", "high", "high"]
    ids = {
        submit(api, clip, priority=priority).json()["id"]: priority for clip, priority in zip(clips, order, strict=True)
    }
    run_worker("tiny.en")

    tasks = sorted((task(api, task_id) for task_id in ids), key=lambda t: t["started_at"])
    assert all(t["status"] == "completed" for t in tasks)
    assert [t["priority"] for t in tasks] == ["high", "high", "normal", "normal", "low", "low"]
    lows = [t for t in tasks if t["priority"] == "low"]
    assert lows[0]["created_at"] < lows[1]["created_at"], "FIFO within one priority"


def test_undecodable_media_fails_with_a_code_and_the_worker_goes_on(
    api: httpx.Client, served: Callable[[str], None], run_worker: RunWorker, settings: Settings
) -> None:
    served("tiny.en")
    broken = api.post("/v1/tasks", files={"file": ("broken.flac", b"fLaC" + bytes(range(256)) * 8)}).json()["id"]
    good = submit(api, JFK).json()["id"]
    run_worker("tiny.en")

    failed = task(api, broken)
    assert failed["status"] == "failed" and failed["finished_at"]
    assert failed["error"]["code"] == "unsupported_media" and failed["error"]["message"]
    assert "Traceback" not in json.dumps(failed)
    assert task(api, good)["status"] == "completed"
    assert api.get(f"/v1/tasks/{broken}/result").status_code == 409
    assert list(settings.uploads.iterdir()) == []


def test_uploads_are_kept_when_configured(
    api: httpx.Client, served: Callable[[str], None], settings: Settings, run_worker: RunWorker
) -> None:
    served("tiny.en")
    settings.keep_uploads = True
    submit(api, DATA / "audio" / "fsdd" / "1_jackson_0.wav")
    run_worker("tiny.en")
    assert len(list(settings.uploads.iterdir())) == 1

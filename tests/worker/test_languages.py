"""Language control: `language` as a list of allowed languages, detection picking the most probable among them."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from shared.schemas import TranscribeOptions
from tests.conftest import DATA, JFK, submit

StartWorker = Callable[..., subprocess.Popen[str]]
SPANISH = DATA / "audio" / "picovoice_cheetah" / "test_es_norm.wav"  # 3 s: "mi número favorito es ..."
SPANISH_LONG = DATA / "audio" / "asterisk" / "es" / "tt-allbusy.opus"  # 15 s of Spanish
SPLIT = {"split_after_s": 10.0, "chunk_target_s": 5.0}  # cut into a few chunks of 5 s


def task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/tasks/{task_id}").json()
    return body


# --- The option ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("en,es", ["en", "es"]),
        ("English, Spanish", ["en", "es"]),
        ('["es", "en"]', ["en", "es"]),
        (["Spanish", "it", "es"], ["es", "it"]),
        ("es", "es"),
        ("Spanish", "es"),
        ('["es"]', "es"),
        ("en, English", "en"),
    ],
)
def test_a_language_list_is_kept_as_sorted_codes_and_one_language_as_a_string(given: Any, kept: Any) -> None:
    assert TranscribeOptions(language=given).language == kept


@pytest.mark.parametrize("given", ["en,klingon", '["en", 3]', '["en",', ",", "[]"])
def test_a_bad_language_list_is_refused(given: str) -> None:
    with pytest.raises(ValidationError):
        TranscribeOptions(language=given)


def test_an_unknown_language_in_a_list_is_422_naming_it(api: httpx.Client, served: Callable[[str], None]) -> None:
    served("base")
    response = submit(api, JFK, model="base", language="fr,klingon, German")
    assert response.status_code == 422, response.text
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == "language" and "'klingon'" in detail["message"] and "German" not in detail["message"]


def test_a_list_waits_for_detection_before_the_task_names_a_language(
    api: httpx.Client, served: Callable[[str], None]
) -> None:
    served("base")
    queued = submit(api, SPANISH, model="base", language="Spanish,it")
    assert queued.status_code == 202, queued.text
    assert queued.json()["options"]["language"] == ["es", "it"] and queued.json()["language"] is None
    assert api.get("/v1/tasks", params={"language": "es"}).json()["tasks"] == [], "no language is indexed yet"


def test_an_english_only_model_takes_english_alone(api: httpx.Client, served: Callable[[str], None]) -> None:
    served("tiny.en")
    refused = submit(api, SPANISH, model="tiny.en", language="es,it")
    assert refused.status_code == 422 and "English-only" in refused.json()["error"]["message"]
    assert submit(api, JFK, model="tiny.en", language="en,English").status_code == 202


def test_the_openai_endpoint_keeps_one_language(api: httpx.Client, served: Callable[[str], None]) -> None:
    served("base")
    with SPANISH.open("rb") as handle:
        response = api.post(
            "/v1/audio/transcriptions", files={"file": handle}, data={"model": "base", "language": "es,it"}
        )
    assert response.status_code == 422, response.text


# --- Detection among the allowed ----------------------------------------------------------------------------


@pytest.mark.slow
def test_detection_picks_the_most_probable_allowed_language(
    api: httpx.Client, served: Callable[[str], None], start_worker: StartWorker
) -> None:
    served("base")
    among = submit(api, SPANISH, model="base", language="es,it").json()["id"]
    without = submit(api, SPANISH, model="base", language="it,fr").json()["id"]
    start_worker("base").finish()

    spanish, other = task(api, among), task(api, without)
    assert spanish["status"] == other["status"] == "completed", (spanish["error"], other["error"])
    assert spanish["language"] == "es" and spanish["language_probability"] > 0.5
    assert "número" in spanish["result"]["text"].lower()
    assert other["language"] in ("it", "fr"), "detection keeps to the allowed languages"
    assert other["result"]["language"] == other["language"]
    assert 0 <= other["language_probability"] < spanish["language_probability"]
    listed = api.get("/v1/tasks", params={"language": "es"}).json()["tasks"]
    assert [t["id"] for t in listed] == [among], "the detected language is indexed"


@pytest.mark.slow
def test_a_split_file_detects_once_among_the_allowed_languages(
    api: httpx.Client, served: Callable[[str], None], start_worker: StartWorker
) -> None:
    served("base")
    task_id = submit(api, SPANISH_LONG, model="base", language="fr,it").json()["id"]
    log = start_worker("base", **SPLIT).finish()

    done = task(api, task_id)
    assert done["status"] == "completed", done["error"]
    assert done["chunks"] >= 2
    assert done["language"] in ("fr", "it") and done["result"]["language"] == done["language"]
    assert done["language_probability"] < 0.5
    assert log.count(f"split into {done['chunks']} chunks") == 1 and f"in {done['language']}" in log

"""Rendering transcripts: SRT, WebVTT, TSV, text and OpenAI's verbose_json."""

from __future__ import annotations

import json

from shared.enums import ResponseFormat, TaskType
from shared.formats import render, timestamp
from shared.schemas import Segment, Transcript
from tests.conftest import make_segment


def transcript(words: bool = False) -> Transcript:
    def segment(index: int, start: float, end: float, text: str) -> Segment:
        return make_segment(index, start, end, text, words)

    return Transcript(
        task=TaskType.TRANSCRIBE,
        language="es",
        language_probability=0.9,
        duration=3725.5,
        text="Hola --> mundo. Adiós.",
        segments=[segment(1, 0.0, 1.5, " Hola --> mundo."), segment(2, 3723.25, 3725.5, " Adiós.")],
    )


def test_timestamp() -> None:
    assert timestamp(3723.2504, ",") == "01:02:03,250"
    assert timestamp(0.0004, ".") == "00:00:00.000"
    assert timestamp(-1, ".") == "00:00:00.000"


def test_srt() -> None:
    body, media_type = render(transcript(), ResponseFormat.SRT)
    assert media_type.startswith("application/x-subrip")
    assert body == ("1\n00:00:00,000 --> 00:00:01,500\nHola -> mundo.\n\n2\n01:02:03,250 --> 01:02:05,500\nAdiós.\n")


def test_vtt() -> None:
    body, media_type = render(transcript(), ResponseFormat.VTT)
    assert media_type.startswith("text/vtt")
    assert body == "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHola -> mundo.\n\n01:02:03.250 --> 01:02:05.500\nAdiós.\n"


def test_tsv_and_text() -> None:
    assert (
        render(transcript(), ResponseFormat.TSV)[0]
        == "start\tend\ttext\n0\t1500\tHola -> mundo.\n3723250\t3725500\tAdiós.\n"
    )
    assert render(transcript(), ResponseFormat.TEXT) == ("Hola --> mundo. Adiós.\n", "text/plain; charset=utf-8")


def test_verbose_json_is_openai_shaped() -> None:
    plain = json.loads(render(transcript(), ResponseFormat.VERBOSE_JSON)[0])
    assert plain["language"] == "spanish" and plain["duration"] == 3725.5 and "words" not in plain
    assert "words" not in plain["segments"][0]
    with_words = json.loads(render(transcript(words=True), ResponseFormat.VERBOSE_JSON)[0])
    assert [w["word"] for w in with_words["words"]] == [" Hola --> mundo.", " Adiós."]


def test_json_round_trips() -> None:
    body, media_type = render(transcript(words=True), ResponseFormat.JSON)
    assert media_type == "application/json"
    assert Transcript.model_validate_json(body) == transcript(words=True)

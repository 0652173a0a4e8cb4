"""The speaker-label benchmark: built conversations whose turns are where the speech is, and DER scored right."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from benchmark import conversations, diarization
from benchmark.conversations import PLANS, SAMPLE_RATE, VOICES, Turn, read_index, read_rttm, read_stm
from benchmark.diarization import COLLAR, Word, der, one_label, real_items, word_accuracy
from tests.conftest import DATA

FRAME = SAMPLE_RATE // 100
SILENT = 1e-4
# RTTM times are in milliseconds: a turn's edge may sit half a millisecond from its first or last sample.
EDGE = SAMPLE_RATE // 1000


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One English two-speaker conversation (the LJSpeech reader and a digit speaker), built as the script does."""
    out = tmp_path_factory.mktemp("conversations")
    conversations.build_all(out, names=["conv2_04"])
    return out


def sample_turns() -> list[Turn]:
    return read_rttm(DATA / "diarization" / "pyannote_sample.rttm")["pyannote_sample"]


def test_plans_pair_different_people_in_the_asked_numbers() -> None:
    sizes = [len(plan) for plan in PLANS.values()]
    assert len(PLANS) >= 20 and (sizes.count(2), sizes.count(3), sizes.count(4)) == (8, 6, 6)
    for name, plan in PLANS.items():
        speakers = [VOICES[voice].speaker for voice in plan]
        assert len(set(speakers)) == len(plan), f"{name} has one person twice: {speakers}"


def test_built_turns_are_where_the_speech_is(built: Path) -> None:
    audio = conversations.decode(built / "conv2_04.wav")
    turns = read_rttm(built / "conv2_04.rttm")["conv2_04"]
    inside = np.zeros(len(audio), dtype=bool)
    for turn in turns:
        start, end = round(turn.start * SAMPLE_RATE), round(turn.end * SAMPLE_RATE)
        inside[start - EDGE : end + EDGE] = True
        spoken = audio[start:end]
        assert np.abs(spoken[: 2 * FRAME]).max() > 100 * SILENT, f"no sound where {turn} starts"
        assert np.abs(spoken[-2 * FRAME :]).max() > 100 * SILENT, f"no sound where {turn} ends"
        frames = np.abs(spoken[: len(spoken) // FRAME * FRAME]).reshape(-1, FRAME).max(axis=1)
        assert (frames > SILENT).mean() > 0.6, f"{turn} is mostly silence"
    assert np.abs(audio[~inside]).max() < SILENT, "sound outside every turn"
    assert 120 <= len(audio) / SAMPLE_RATE <= 250


def test_built_turns_alternate_between_people_in_lengths_asked(built: Path) -> None:
    turns = read_rttm(built / "conv2_04.rttm")["conv2_04"]
    assert {turn.speaker for turn in turns} == {"ljspeech", "fsdd_jackson"}
    assert all(a.speaker != b.speaker for a, b in zip(turns, turns[1:], strict=False))
    assert all(2.0 <= turn.end - turn.start <= 15.0 for turn in turns)
    pauses = [b.start - a.end for a, b in zip(turns, turns[1:], strict=False)]
    assert all(0.2 - 1e-3 <= pause <= 1.5 + 1e-3 for pause in pauses)
    assert sum(pause <= 0.5 and b.end - b.start <= 3.5 for pause, b in zip(pauses, turns[1:], strict=True)) >= 2
    words = read_stm(built / "conv2_04.stm")
    assert [(w.start, w.speaker) for w in words] == [(t.start, t.speaker) for t in turns]
    assert all(w.text for w in words)
    (row,) = read_index(built)
    assert (row["name"], row["speakers"], row["turns"], row["stm"]) == ("conv2_04", "2", str(len(turns)), "1")
    assert float(row["seconds"]) == pytest.approx(turns[-1].end + 0.5, abs=1e-3)


def test_the_schedule_keeps_turns_and_pauses_in_range_with_quick_exchanges() -> None:
    drawn = list(itertools.islice(conversations.schedule(["a", "b", "c"], np.random.default_rng(0)), 2000))
    assert all(a[0] != b[0] for a, b in zip(drawn, drawn[1:], strict=False))
    assert all(2.0 <= length <= 12.0 and 0.2 <= pause <= 1.5 for _, length, pause in drawn)
    quick = [length <= 3.5 and pause <= 0.5 for _, length, pause in drawn]
    assert 0.2 < sum(quick) / len(quick) < 0.8
    assert {voice for voice, _, _ in drawn} == {"a", "b", "c"}


def test_building_again_gives_the_same_conversation() -> None:
    clips = conversations.load_manifest(DATA / "manifest.tsv")
    first = conversations.build("conv2_05", PLANS["conv2_05"], clips, seed=18)
    again = conversations.build("conv2_05", PLANS["conv2_05"], clips, seed=18)
    other = conversations.build("conv2_05", PLANS["conv2_05"], clips, seed=19)
    assert first.turns == again.turns and np.array_equal(first.audio, again.audio)
    assert first.turns != other.turns


def test_der_is_zero_for_the_reference_and_large_for_one_label() -> None:
    turns = sample_turns()
    assert der(turns, turns, 30.0) == 0.0
    assert der(turns, turns, 30.0, collar=0.0) == 0.0
    renamed = [Turn(t.start, t.end, f"SPEAKER_{t.speaker}") for t in turns]
    assert der(turns, renamed, 30.0) == 0.0, "labels are mapped to speakers before scoring"
    audio = np.zeros(30 * SAMPLE_RATE, dtype=np.float32)
    assert der(turns, one_label(audio, real_items()[0], None), 30.0) > 0.5


def test_the_collar_is_a_quarter_second_either_side_of_each_boundary() -> None:
    reference = [Turn(1.0, 5.0, "a"), Turn(6.0, 9.0, "b")]
    late = [Turn(turn.start + 0.2, turn.end + 0.2, turn.speaker) for turn in reference]
    later = [Turn(turn.start + 0.3, turn.end + 0.3, turn.speaker) for turn in reference]
    assert COLLAR == 0.5
    assert der(reference, late, 10.0) == 0.0
    assert der(reference, later, 10.0) == pytest.approx(4 * 0.05 / 6.0)
    assert der(reference, late, 10.0, collar=0.0) == pytest.approx(4 * 0.2 / 7.0)


def test_word_accuracy_maps_labels_and_counts_words_given_to_the_wrong_person() -> None:
    said = [
        Turn(0.0, 2.0, "a", "Hello there, friend."),
        Turn(2.5, 4.0, "b", "Good morning!"),
        Turn(4.5, 6.0, "a", "Bye"),
    ]
    heard = [Word(t.start, t.end, {"a": "SPEAKER_01", "b": "SPEAKER_00"}[t.speaker], t.text) for t in said]
    assert word_accuracy(said, heard) == (1.0, 6)
    blurred = [*heard[:2], Word(4.5, 6.0, "SPEAKER_00", "bye")]
    assert word_accuracy(said, blurred) == (pytest.approx(5 / 6), 6)
    misheard = [*heard[:2], Word(4.5, 6.0, "SPEAKER_01", "sticks and")]
    assert word_accuracy(said, misheard) == (1.0, 6), (
        "a substituted word keeps its speaker; an inserted one is left out"
    )


def test_the_oracle_run_writes_zero_der_tables(tmp_path: Path) -> None:
    diarization.main(["--only", "real", "--engine", "oracle", "--out", str(tmp_path)])
    table = (tmp_path / "diarization.md").read_text()
    assert "| AMI excerpts | 11 | 5.5 | 0.0 | ≤ 20 met |" in table
    figures = json.loads((tmp_path / "diarization.json").read_text())["Recorded conversations"]
    assert {name: group["der"]["0.25 s"] for name, group in figures["groups"].items()} == {
        "AMI excerpts": 0.0,
        "falcon_test": 0.0,
        "pyannote_sample": 0.0,
    }
    assert len(figures["files"]) == 13


def test_one_speaker_at_a_time_misses_only_the_overlapping_speech() -> None:
    """The floor overlapping speech sets: AMI's excerpts hold a second voice over a first in 18.4 % of their scored
    speech (no collar), all of it missed and nothing else wrong; Falcon's test has no overlap."""
    ami = [item for item in real_items() if item.group in ("AMI excerpts", "falcon_test")]
    _, groups = diarization.score_items(diarization.one_at_a_time, ami)
    assert groups["AMI excerpts"]["der"]["none"] == pytest.approx(0.184, abs=0.001)
    assert groups["AMI excerpts"]["parts"]["false alarm"] == groups["AMI excerpts"]["parts"]["confusion"] == 0.0
    assert groups["falcon_test"]["der"]["none"] == 0.0


def test_the_engine_path_labels_pyannotes_sample() -> None:
    sample = [item for item in real_items() if item.name == "pyannote_sample"]
    scores, groups = diarization.score_items(diarization.whisperq_engine("cpu", "auto"), sample)
    # The engine's own tests hold it to exactly two labels; this holds the benchmark's path to a real labelling:
    # measured 6.9 to 7.0 % with the 0.25 s collar while the engine was written.
    assert scores[0].found >= 2 and scores[0].seconds == pytest.approx(30.0, abs=0.01)
    assert groups["pyannote_sample"]["der"]["0.25 s"] < 0.15
    assert scores[0].der["0.25 s"] == groups["pyannote_sample"]["der"]["0.25 s"]


def test_a_labelled_result_gives_its_words_and_speakers() -> None:
    result = {
        "segments": [
            {
                "start": 0.0,
                "end": 2.0,
                "text": " Hello there, friend.",
                "speaker": "SPEAKER_00",
                "words": [
                    {"start": 0.0, "end": 0.5, "word": " Hello", "speaker": "SPEAKER_00"},
                    {"start": 0.6, "end": 1.0, "word": " there,", "speaker": "SPEAKER_00"},
                    {"start": 1.1, "end": 2.0, "word": " friend.", "speaker": "SPEAKER_01"},
                ],
            },
            {"start": 2.5, "end": 4.0, "text": " Good morning!", "speaker": "SPEAKER_01", "words": None},
            {
                "start": 4.5,
                "end": 6.0,
                "text": " Bye",
                "speaker": "SPEAKER_00",
                "words": [{"start": 4.5, "end": 6.0, "word": " Bye"}],
            },
        ],
        "speakers": [{"speaker": "SPEAKER_00", "seconds": 3.0, "turns": 2}],
    }
    words = diarization.result_words(result)
    assert [(w.text, w.speaker) for w in words] == [
        (" Hello", "SPEAKER_00"),
        (" there,", "SPEAKER_00"),
        (" friend.", "SPEAKER_01"),
        (" Good morning!", "SPEAKER_01"),
        (" Bye", "SPEAKER_00"),
    ]
    said = [
        Turn(0.0, 2.0, "a", "Hello there, friend."),
        Turn(2.5, 4.0, "b", "Good morning!"),
        Turn(4.5, 6.0, "a", "Bye"),
    ]
    assert word_accuracy(said, words) == (pytest.approx(5 / 6), 6)

"""The accuracy harness keeps going and keeps what it measured: bad rows reported and skipped, a killed run resumed;
and its scores mean what they say: CER where words have no spaces, numbers normalised on both sides."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.cli import main
from benchmark.dataset import Clip, language_label, read_manifest, spoken_language
from benchmark.journal import JOURNAL, Journal, earlier
from benchmark.report import Run, markdown, summaries
from benchmark.runners import Outcome, options_for
from benchmark.scoring import error_rates, normalise, normaliser_name
from tests.conftest import DATA, PROJECT

FSDD = DATA / "audio" / "fsdd"
HEADER = "id\taudio\tlanguage\treference\n"


def digit_rows(count: int) -> str:
    """Manifest rows for `count` of the shortest real clips: spoken digits, one word each."""
    names = sorted(FSDD.glob("*_george_*.wav"))[:count]
    return "".join(f"{path.stem}\t{path}\ten\t{path.stem.split('_')[0]}\n" for path in names)


@pytest.fixture
def bench_env(monkeypatch: pytest.MonkeyPatch, model_cache: Path, tmp_path: Path) -> dict[str, str]:
    """The environment a harness run gets: the bundled models only, nothing downloaded."""
    values = {
        "WHISPERQ_MODEL_CACHE_DIR": str(model_cache),
        "WHISPERQ_ALLOW_DOWNLOAD": "false",
        "WHISPERQ_DATA_DIR": str(tmp_path / "data"),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


def test_bad_rows_are_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    manifest = tmp_path / "set.tsv"
    manifest.write_text(
        HEADER
        + digit_rows(1)
        + f"short\t{FSDD / '1_george_0.wav'}\ten\n"
        + f"wide\t{FSDD / '1_george_0.wav'}\ten\tone\tan extra column\n"
        + f"klingon\t{FSDD / '1_george_0.wav'}\ttlh\tqapla\n"
        + "gone\taudio/not-there.wav\ten\thello\n"
        + f"spanish\t{FSDD / '1_george_0.wav'}\tSpanish\tuno\n"
        + f"broken\t{broken}\ten\tanything\n"
    )
    clips, skipped = read_manifest(manifest)
    assert [clip.id for clip in clips] == ["0_george_0", "spanish", "broken"]
    assert clips[1].language == "es", "a language's name is read as its code"
    assert {row.id: row.reason for row in skipped} == {
        "short": "no reference",
        "wide": "more columns than the header",
        "klingon": "unknown language 'tlh'",
        "gone": "audio file missing: audio/not-there.wav",
    }
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text('{"audio": "x.wav"\n' + json.dumps({"audio": str(broken), "reference": "a"}) + "\n")
    clips, skipped = read_manifest(jsonl)
    assert [clip.id for clip in clips] == ["broken"] and [row.id for row in skipped] == ["line 1"]


def test_code_switched_labels_are_run_with_detection() -> None:
    assert language_label("zh+EN") == "zh+en" and language_label("") is None
    with pytest.raises(ValueError, match="unknown language 'zh\\+xx'"):
        language_label("zh+xx")
    mixed = Clip(id="m", audio=Path("m.wav"), reference="", language="zh+en")
    assert spoken_language(mixed) is None and options_for(mixed).language is None
    assert options_for(Clip(id="e", audio=Path("e.wav"), reference="", language="es")).language == "es"
    assert normaliser_name("zh+en") == "whisper-basic"


@pytest.mark.slow
def test_a_manifest_with_bad_rows_completes_with_them_reported(
    bench_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF but not really a wave file")
    manifest = tmp_path / "set.tsv"
    manifest.write_text(
        HEADER
        + digit_rows(2)
        + f"no-reference\t{FSDD / '1_george_0.wav'}\ten\n"
        + f"klingon\t{FSDD / '1_george_0.wav'}\ttlh\tqapla\n"
        + "gone\tnot-there.wav\ten\thello\n"
        + f"broken\t{broken}\ten\tanything\n"
    )
    out = tmp_path / "results"
    main(["--manifest", str(manifest), "--models", "tiny.en", "--out", str(out)])
    (folder,) = out.iterdir()
    results = json.loads((folder / "results.json").read_text())
    assert {row["id"] for row in results["skipped"]} == {"no-reference", "klingon", "gone"}
    overall = next(row for row in results["summaries"] if row["language"] == "all")
    assert overall["clips"] == 3 and overall["failed"] == 1 and overall["wer"] is not None
    summary = (folder / "summary.md").read_text()
    assert "skipped 3 manifest rows: no-reference (no reference); klingon (unknown language 'tlh'); gone " in summary
    assert "failed along engine with tiny.en: 1 clips: broken (" in summary
    assert "klingon (unknown language 'tlh')" in capsys.readouterr().out


def journal_lines(folder: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (folder / JOURNAL).read_text().splitlines()]


def wait_for_journal(out: Path, count: int, process: subprocess.Popen[bytes], timeout_s: float = 120) -> Path:
    """The folder of the run under `out` once its journal has `count` complete lines, the run still going."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for journal in out.glob(f"*/{JOURNAL}"):
            if journal.read_text().count("\n") >= count:
                return journal.parent
        assert process.poll() is None, "the run ended before it was killed"
        time.sleep(0.05)
    raise AssertionError(f"no {count} lines in a journal under {out} within {timeout_s} s")


@pytest.mark.slow
def test_a_killed_run_keeps_what_it_measured_and_resume_finishes_it(bench_env: dict[str, str], tmp_path: Path) -> None:
    manifest, out = tmp_path / "set.tsv", tmp_path / "results"
    manifest.write_text(HEADER + digit_rows(4))
    command = [sys.executable, "-m", "benchmark", "--manifest", str(manifest), "--models", "tiny.en", "--out", str(out)]
    with (tmp_path / "first.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=PROJECT, env={**os.environ, **bench_env}, stdout=log, stderr=log)
        try:
            folder = wait_for_journal(out, 2, process)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
    kept = journal_lines(folder)
    assert 2 <= len(kept) < 4 and not (folder / "summary.md").exists()

    main(["--resume", "--out", str(out)])
    lines = journal_lines(folder)
    assert lines[: len(kept)] == kept, "what the killed run wrote stays as it was"
    clips = [str(line["clip"]) for line in lines]
    assert sorted(clips) == sorted(path.stem for path in sorted(FSDD.glob("*_george_*.wav"))[:4])
    assert len(set(clips)) == 4, "no clip measured before the kill is measured again"
    overall = next(r for r in json.loads((folder / "results.json").read_text())["summaries"] if r["language"] == "all")
    assert overall["clips"] == 4 and overall["failed"] == 0
    assert f"engine tiny.en: {len(kept)} clips measured before the resume" in (folder / "summary.md").read_text()


def outcome(clip_id: str, language: str, reference: str, hypothesis: str) -> Outcome:
    clip = Clip(id=clip_id, audio=Path(f"{clip_id}.wav"), reference=reference, language=language)
    return Outcome(clip, "engine", "base", hypothesis, language, audio_s=2.0, latency_s=0.5, processing_s=0.5)


def test_a_journal_cut_short_by_a_kill_is_read_to_its_last_whole_line(tmp_path: Path) -> None:
    first, second = outcome("a", "en", "one", "one"), outcome("b", "en", "two", "too")
    with Journal(tmp_path) as journal:
        journal.record(first, 1.0)
    with (tmp_path / JOURNAL).open("a") as handle:
        handle.write('{"path": "engine", "model": "ba')
    with Journal(tmp_path) as journal:
        journal.record(second, 2.0)
    found = earlier(tmp_path, [first.clip, second.clip])[("engine", "base")]
    assert set(found.outcomes) == {"a", "b"} and found.outcomes["b"].hypothesis == "too"
    assert found.total_wall_s() == 3.0, "each session's wall time, added"


def test_chinese_and_japanese_are_scored_by_cer_never_wer() -> None:
    outcomes = [
        outcome("zh1", "zh", "砸自己的脚", "砸 自己的 脚。"),
        outcome("ja1", "ja", "今日は晴れです", "今日は 晴れ です"),
        outcome("en1", "en", "ask not what your country can do", "ask not what your country can do for"),
    ]
    rows = {row.language: row for row in summaries([Run("engine", "base", outcomes, wall_s=1.0, concurrency=1)])}
    assert rows["zh"].wer is None and rows["zh"].cer == 0.0, "spaces carry nothing in Chinese"
    assert rows["ja"].wer is None and rows["ja"].cer == 0.0
    assert rows["all"].wer == pytest.approx(1 / 7, abs=1e-4), "WER over the spaced languages only"
    table = markdown(list(rows.values()))
    assert "| engine | base | zh | 1 | 0.0 | – | 0.0 |" in table and "100.0" not in table


@pytest.mark.parametrize(
    ("language", "spoken", "written"),
    [
        ("en", "twenty five", "25"),
        ("en", "I paid twenty-five dollars", "I paid $25"),
        ("es", "veinticinco", "25"),
        ("es", "marque ocho mil quinientos", "marque 8.500"),
        ("it", "venticinque", "25"),
        ("ru", "нажмите двадцать пять", "нажмите 25"),
        ("de", "fünfundzwanzig", "25"),
        ("fr", "vingt-cinq", "25"),
        ("pt", "vinte e cinco", "25"),
    ],
)
def test_spoken_numbers_and_numerals_compare_equal(language: str, spoken: str, written: str) -> None:
    assert normalise(spoken, language) == normalise(written, language)
    assert error_rates([normalise(written, language)], [normalise(spoken, language)]) == (0.0, 0.0)


def test_every_table_names_its_normaliser() -> None:
    outcomes = [outcome("en1", "en", "a b", "a b"), outcome("es1", "es", "marque 2", "marque dos")]
    table = markdown(summaries([Run("engine", "base", outcomes, wall_s=1.0, concurrency=1)]))
    assert table.splitlines()[0].endswith("| normaliser |")
    assert "| en | 1 |" in table and "| whisper-english |" in table
    assert "| es | 1 | 0.0 | 0.0 | 0.0 |" in table and "| whisper-basic+num2words |" in table
    assert "| all | 2 |" in table and "| whisper-basic+num2words, whisper-english |" in table

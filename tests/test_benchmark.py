"""The benchmark harness: test-set layouts, normalisation and scoring, and small real runs of every mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmark import device
from benchmark.cli import main
from benchmark.dataset import Clip, Filters, load_folder, load_manifest, reference_for
from benchmark.report import percentile
from benchmark.scoring import error_rates, normalise
from tests.conftest import DATA, JFK

FSDD = DATA / "audio" / "fsdd"


def test_folder_variants_score_against_their_base_reference(tmp_path: Path) -> None:
    (tmp_path / "audios").mkdir()
    (tmp_path / "text-references").mkdir()
    for name in ("sample1.wav", "sample1-loud.m4a", "sample2-fast-noisy.flac", "take-3.wav"):
        shutil.copy(FSDD / "0_george_0.wav", tmp_path / "audios" / name)
    (tmp_path / "audios" / "notes.md").write_text("not audio")
    (tmp_path / "text-references" / "sample1.txt").write_text("first sample\n")
    (tmp_path / "text-references" / "sample2.txt").write_text("second sample")
    (tmp_path / "text-references" / "take-3.txt").write_text("a take")

    clips = {clip.id: clip for clip in load_folder(tmp_path, language="en")}
    assert set(clips) == {"sample1", "sample1-loud", "sample2-fast-noisy", "take-3"}
    assert clips["sample1-loud"].reference == clips["sample1"].reference == "first sample"
    assert clips["sample2-fast-noisy"].reference == "second sample"
    assert clips["take-3"].reference == "a take", "an exact name wins over stripping a '-3'"
    assert clips["sample1"].language == "en"

    shutil.copy(FSDD / "0_george_0.wav", tmp_path / "audios" / "orphan-loud.wav")
    with pytest.raises(ValueError, match="orphan-loud.wav"):
        load_folder(tmp_path)


def test_reference_lookup_rules() -> None:
    refs = {"a": Path("a.txt"), "a-b": Path("a-b.txt")}
    assert reference_for("a-b-c", refs) == Path("a-b.txt")
    assert reference_for("a-x", refs) == Path("a.txt")
    assert reference_for("b-a", refs) is None


@pytest.mark.parametrize(
    ("text", "language", "expected"),
    [
        ("Press * then # to confirm.", "en", "press star then pound to confirm"),
        ("And so, my fellow Americans: ask not!", "en", "and so my fellow americans ask not"),
        ("Mr. Smith paid twenty five dollars", "en", "mister smith paid $25"),
        ("Pulse * para continuar.", "es", "pulse asterisco para continuar"),
        ("¡Hola, Señor!", "es", "hola señor"),
        ("Premere # per confermare", "it", "premere cancelletto per confermare"),
        ("Нажмите *", "ru", "нажмите звёздочка"),
    ],
)
def test_normalisation(text: str, language: str, expected: str) -> None:
    assert normalise(text, language) == expected


def test_error_rates_are_corpus_level_and_skip_empty_references() -> None:
    wer, cer = error_rates(["a b c d", "e f", ""], ["a b x d", "e f", "anything"])
    assert wer == pytest.approx(1 / 6) and 0 < cer < wer
    assert error_rates(["a"], [""])[0] == 1.0


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.95), percentile(values, 0.99)) == (50.0, 95.0, 99.0)


def test_manifests_in_every_format_and_filters(tmp_path: Path) -> None:
    real = load_manifest(DATA / "manifest.tsv")
    assert len(real) > 1000 and all(clip.audio.exists() for clip in real[:20])
    jfk = next(clip for clip in real if clip.id == "fw_jfk")
    assert jfk.audio == DATA / "audio" / "faster_whisper" / "jfk.flac" and jfk.duration == 11.0

    (tmp_path / "set.csv").write_text(f"audio,reference,language\n{JFK},hello there,en\n")
    (tmp_path / "set.jsonl").write_text(json.dumps({"audio": str(JFK), "reference": "hi", "language": "en"}) + "\n")
    assert load_manifest(tmp_path / "set.csv")[0] == Clip(id="jfk", audio=JFK, reference="hello there", language="en")
    assert load_manifest(tmp_path / "set.jsonl")[0].reference == "hi"

    spanish = Filters(languages=frozenset({"es"}), ref_qualities=frozenset({"script"})).apply(real)
    assert (
        spanish
        and {clip.language for clip in spanish} == {"es"}
        and {c.ref_quality.split()[0] for c in spanish} == {"script"}
    )
    digits = Filters(sources=("free-spoken-digit-dataset",), max_clips=10).apply(real)
    assert len(digits) == 10 and len({clip.reference for clip in digits}) == 10, "spread over the set"
    assert all(clip.duration and clip.duration >= 10 for clip in Filters(min_duration=10).apply(real))


@pytest.fixture
def bench_env(monkeypatch: pytest.MonkeyPatch, model_cache: Path, tmp_path: Path) -> Path:
    for name, value in {
        "WHISPERQ_MODEL_CACHE_DIR": str(model_cache),
        "WHISPERQ_ALLOW_DOWNLOAD": "false",
        "WHISPERQ_DATA_DIR": str(tmp_path / "data"),
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path / "results"


def only_result(out: Path) -> Path:
    (folder,) = out.iterdir()
    return folder


@pytest.mark.slow
def test_a_small_real_run_along_both_paths(bench_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = str(DATA / "manifest.tsv")
    main(
        [
            "--manifest",
            manifest,
            "--source",
            "SYSTRAN",
            "--language",
            "en",
            "--max-clips",
            "2",
            "--models",
            "tiny.en",
            "--paths",
            "engine,api",
            "--out",
            str(bench_env),
        ]
    )
    folder = only_result(bench_env)
    summary = json.loads((folder / "results.json").read_text())["summaries"]
    overall = {(row["path"], row["language"]): row for row in summary}
    for path in ("engine", "api"):
        row = overall[(path, "all")]
        assert row["clips"] == 2 and row["failed"] == 0 and row["wer"] < 0.2
        assert row["rtf"] > 0 and row["latency_p50_s"] > 0 and row["throughput"] > 0
        assert row["peak_memory_mb"] > 50
    for name in ("wer_by_model_language.png", "rtf_by_model.png", "latency.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| engine | tiny.en | en |" in (folder / "summary.md").read_text()
    assert len((folder / "clips.csv").read_text().splitlines()) == 5
    assert "| api | tiny.en | all |" in capsys.readouterr().out


@pytest.mark.slow
def test_overhead_and_scaling_modes_print_their_ratios(bench_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = [
        "--manifest",
        str(DATA / "manifest.tsv"),
        "--source",
        "free-spoken-digit-dataset",
        "--max-clips",
        "4",
        "--models",
        "tiny.en",
        "--repeat",
        "1",
        "--out",
        str(bench_env),
    ]
    main([*common, "--mode", "overhead"])
    main([*common, "--mode", "scaling"])
    printed = capsys.readouterr().out
    assert "overhead tiny.en: api/engine wall time, all clips: median " in printed
    assert "scaling tiny.en: throughput 2 workers / 1 worker at concurrency 4: median " in printed
    runs = [json.loads((folder / "results.json").read_text())["runs"] for folder in bench_env.iterdir()]
    assert sorted(run["path"] for group in runs for run in group) == ["api", "api-1w", "api-2w", "engine"]


@pytest.mark.slow
def test_device_benchmark_measures_every_mode_on_a_few_clips(bench_env: Path) -> None:
    out = bench_env / "device.md"
    report = device.main(["--model", "tiny.en", "--clips", "3", "--quick", "--sets", "clips", "--out", str(out)])
    assert out.read_text() == report and "tiny.en on " in report
    lines = [line for line in report.splitlines() if line.startswith("| ") and not line.startswith("| mode ")]
    rows = {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in lines)}
    assert set(rows) == set(device.MODES)
    for mode, (_, set_name, items, audio_s, _, xrt, ratio, wer) in rows.items():
        assert (set_name, items) == ("clips", "3") and float(audio_s) > 5, mode
        assert float(xrt) > 0 and float(ratio) > 0 and float(wer) < 30, mode
    assert rows["sequential"][6] == "1.00"

"""Long files: cut at silences, chunks fanned out to workers, stitched back; cancel, kill and priority."""

from __future__ import annotations

import bisect
import signal
import subprocess
import tracemalloc
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import jiwer
import pytest
from redis import Redis
from rq import Queue

from benchmark.dataset import read_manifest
from benchmark.scoring import normalise
from shared import fleet, keys
from shared.chunks import ChunkStore
from shared.enums import ChunkStatus, Priority, TaskType
from shared.schemas import Chunk, Segment, TranscribeOptions, Transcript
from shared.settings import Settings
from tests.conftest import DATA, JFK, make_segment, submit, wait_for
from tests.test_ecosystem import read_events
from worker import splitting, spooling
from worker.stitch import rendered, shift, stitch

StartWorker = Callable[..., subprocess.Popen[str]]
LJSPEECH = DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"
ASTERISK = DATA / "long" / "asterisk_en_dev_concat.flac"
SPLIT = {"split_after_s": 60.0, "chunk_target_s": 30.0}
# The asterisk file's prompts are joined with this pause after each (DATA/README.md).
ASTERISK_PAUSE_S = 0.75


@lru_cache(maxsize=2)
def planned(path: Path, target_s: float) -> tuple[list[tuple[float, float]], list[tuple[float, float]], float]:
    """The speech the VAD hears in a file, the chunks it is cut into, and its duration."""
    audio = splitting.decode(path, 3600)
    duration = len(audio) / splitting.SAMPLE_RATE
    speech = splitting.speech_spans(audio)
    return speech, splitting.plan(speech, duration, target_s), duration


def squeezed(path: Path, target_s: float) -> list[tuple[float, float]]:
    """Where each chunk of a file starts and ends on its timeline, as the worker cuts it by default (long pauses'
    middles left out of its audio)."""
    speech, _, duration = planned(path, target_s)
    pause = Settings().chunk_pause_s
    return [(spans[0][0], spans[-1][1]) for spans in splitting.squeezed_plan(speech, duration, target_s, pause)]


def chunk_of(starts: list[float], t: float) -> int:
    """The index of the chunk a time falls in, by the chunks' starts (a time between two chunks: the earlier)."""
    return max(0, bisect.bisect_right(starts, t) - 1)


def task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/tasks/{task_id}").json()
    return body


def finished(api: httpx.Client, task_id: str, timeout_s: float = 300) -> dict[str, Any]:
    ended = {"completed", "failed", "cancelled"}
    return wait_for(lambda: (t := task(api, task_id))["status"] in ended and t, timeout_s)  # type: ignore[no-any-return]


@pytest.fixture
def long_api(api_factory: Callable[..., httpx.Client], served: Callable[[str], None]) -> httpx.Client:
    served("tiny.en")
    return api_factory(**SPLIT)


@pytest.fixture
def chunk_store(redis: Redis, settings: Settings) -> ChunkStore:
    return ChunkStore(redis, settings.task_ttl_s)


def held_chunk(chunk_store: ChunkStore, task_id: str) -> Any:
    """Wait until a worker is partway through a chunk (not the first) of the task; that chunk's state."""

    def check() -> Any:
        split = chunk_store.load(task_id)
        if split is None:
            return None
        return next((c for c in split.chunks if c.state == ChunkStatus.PROCESSING and c.chunk.index > 0), None)

    return wait_for(check, timeout_s=120)


def asterisk_head(folder: Path, seconds: float) -> Path:
    """The asterisk file's first prompts, about `seconds` of them, cut in the middle of the pause after the last,
    beside their reference text: the same prompts and pauses, a smaller file to split."""
    import soundfile

    clips = {clip.id: clip for clip in read_manifest(DATA / "manifest.tsv")[0]}
    order = [clips[name] for name in ASTERISK.with_suffix(".ids").read_text().split()]
    end, kept = 0.0, []
    for clip in order:
        if end >= seconds:
            break
        assert clip.duration is not None
        end += clip.duration + ASTERISK_PAUSE_S
        kept.append(clip.reference)
    rate = soundfile.info(ASTERISK).samplerate
    audio, _ = soundfile.read(ASTERISK, frames=round((end - ASTERISK_PAUSE_S / 2) * rate), dtype="float32")
    head = folder / "asterisk_head.flac"
    soundfile.write(head, audio, rate)
    head.with_suffix(".txt").write_text(" ".join(kept))
    return head


# --- Splitting -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [LJSPEECH, ASTERISK], ids=["ljspeech", "asterisk"])
def test_cuts_fall_in_silences_and_chunks_cover_the_file(path: Path) -> None:
    speech, chunks, duration = planned(path, 30.0)
    assert chunks[0][0] == 0 and chunks[-1][1] == duration
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:], strict=False)), "chunks are contiguous"
    cuts = [end for _, end in chunks[:-1]]
    for cut in cuts:
        assert not any(start <= cut <= end for start, end in speech), f"cut at {cut:.2f} s is inside speech"
    lengths = [end - start for start, end in chunks]
    assert all(30 / 8 <= length <= 30 for length in lengths[:-1]), lengths
    assert sum(lengths) / len(lengths) > 24, "chunks fill most of a window"
    assert len(chunks) >= duration // 30


@pytest.mark.parametrize("path", [LJSPEECH, ASTERISK], ids=["ljspeech", "asterisk"])
def test_a_squeezed_chunk_holds_its_speech_and_only_short_pauses(path: Path) -> None:
    speech, whole, duration = planned(path, 30.0)
    plan = splitting.squeezed_plan(speech, duration, 30.0, 0.3)
    pieces = [piece for spans in plan for piece in spans]
    assert all(sum(b - a for a, b in spans) <= 30.0 + 1e-6 for spans in plan), "each chunk's audio fits a window"
    assert pieces == sorted(pieces) and all(a < b for a, b in pieces)
    for start, end in speech:
        kept = any(a - 1e-3 <= start and end <= b + 1e-3 for a, b in pieces)
        assert kept, f"speech {start:.2f}-{end:.2f} s is left out"
    quiet = splitting.silences(speech, duration)
    for (_, left), (right, _) in zip(pieces, pieces[1:], strict=False):
        if right - left > 1e-3:  # a stretch left out: the middle of one long pause, 0.3 s of it kept
            pause = next((a, b) for a, b in quiet if a <= left and right <= b)
            assert pause[1] - pause[0] > 0.3 and (left - pause[0]) + (pause[1] - right) == pytest.approx(0.3, abs=2e-3)
    assert len(plan) <= len(whole)
    if path == ASTERISK:  # its prompts are 0.75 s apart: 29 windows instead of 36
        assert len(plan) < 0.85 * len(whole), "fewer windows than with every pause kept"
    assert splitting.squeezed_plan(speech, duration, 30.0, 0.0) == [[chunk] for chunk in whole], "0: pauses whole"


def test_a_time_in_a_squeezed_chunk_is_placed_on_the_original_timeline() -> None:
    chunk = Chunk(index=3, start=100.0, end=130.0, pieces=[(100.0, 110.0), (115.0, 130.0)])
    assert [chunk.place(t) for t in (-1.0, 0.0, 9.5, 10.0, 10.5, 25.0, 40.0)] == [
        100.0, 100.0, 109.5, 110.0, 115.5, 130.0, 130.0
    ]  # fmt: skip
    assert chunk.spans == chunk.pieces and chunk.duration == 30.0
    plain = Chunk(index=0, start=0.0, end=20.0)
    assert plain.spans == [(0.0, 20.0)] and plain.place(5.0) == 5.0 and plain.place(25.0) == 20.0
    moved = shift(make_segment(1, 9.0, 12.0, " across the joint", words=True), chunk)
    assert (moved.start, moved.end) == (109.0, 117.0)


def test_spooling_scores_speech_as_a_whole_file_pass_in_flat_memory(tmp_path: Path) -> None:
    spooled = spooling.spool(ASTERISK, 3600, tmp_path / "audio.raw")
    speech, _, duration = planned(ASTERISK, 30.0)
    assert spooled.duration == duration
    assert spooling.speech_spans(spooled.scores, spooled.samples) == speech, "the same spans as faster-whisper's VAD"
    assert spooled.read(10.0, 11.0).shape == (splitting.SAMPLE_RATE,)

    tracemalloc.start()
    try:  # the worker's way: each chunk's plan as it is settled (its audio is then read a chunk at a time)
        planned_chunks = [
            chunk for _, plan in spooling.cut(ASTERISK, 3600, tmp_path / "cut.raw", 28.0, 0.3) for chunk in plan
        ]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Decoding it whole peaks at 185 MiB (float samples and copies); cutting as it reads holds a few blocks of 31 s.
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB while cutting a 16-minute file"
    assert len(planned_chunks) == 31


def streamed(scores: Any, samples: int, target_s: float, pause_s: float, blocks: list[int]) -> list[Any]:
    """The chunks a Cutter gives for scores fed in blocks of these many frames, and for how many frames were fed
    when each was given."""
    cutter, given, fed = spooling.Cutter(target_s, pause_s), [], 0
    for size in blocks:
        given += [(chunk, fed + size) for chunk in cutter.feed(scores[fed : fed + size])]
        fed += size
    return given + [(chunk, None) for chunk in cutter.finish(samples)]


def same_plan(got: list[list[tuple[float, float]]], whole: list[list[tuple[float, float]]]) -> bool:
    """The same chunks, stretch for stretch, to the millisecond the chunks are recorded in."""
    if [len(chunk) for chunk in got] != [len(chunk) for chunk in whole]:
        return False
    pairs = [(a, b) for x, y in zip(got, whole, strict=True) for a, b in zip(x, y, strict=True)]
    return all(abs(a[0] - b[0]) <= 0.0011 and abs(a[1] - b[1]) <= 0.0011 for a, b in pairs)


def test_chunks_cut_as_the_audio_comes_are_the_whole_files_plan(tmp_path: Path) -> None:
    import numpy as np

    spooled = spooling.spool(ASTERISK, 3600, tmp_path / "audio.raw")
    scores, samples = spooled.scores, spooled.samples
    speech = spooling.speech_spans(scores, samples)
    rng = np.random.default_rng(5)
    for target_s, pause_s in [(28.0, 0.3), (15.0, 0.3), (28.0, 0.0)]:
        whole = splitting.squeezed_plan(speech, spooled.duration, target_s, pause_s, scores)
        blocks = [977] * (len(scores) // 977 + 1)  # the worker's blocks: 500,000 samples
        given = streamed(scores, samples, target_s, pause_s, blocks)
        assert same_plan([chunk for chunk, _ in given], whole), (target_s, pause_s)
        early = [fed for _, fed in given if fed is not None]
        assert len(early) >= len(whole) - 2, "every chunk but the last one or two is given before the end"
        first = whole[0][-1][1]  # each chunk is given within a block or two of the audio that settles its cut
        assert early[0] * 512 / 16000 <= first + target_s + 2 * 977 * 512 / 16000
        odd = list(rng.integers(1, 2000, size=len(scores) // 500))
        assert same_plan([chunk for chunk, _ in streamed(scores, samples, target_s, pause_s, odd)], whole)

    # Made-up scores: speech and pauses of every length, and stretches of speech with no pause that must be cut at
    # their quietest frame, fed in blocks of odd sizes.
    for trial in range(40):
        runs = rng.choice([3, 8, 40, 300, 900, 2500], size=200) * rng.integers(1, 3, size=200)
        levels = np.where(np.arange(200) % 2 == 0, 0.9, 0.1)
        made = np.repeat(levels, runs).astype(np.float32) + rng.normal(0, 0.03, int(runs.sum())).astype(np.float32)
        made_samples = len(made) * 512 - int(rng.integers(0, 512))
        made_speech = spooling.speech_spans(made, made_samples)
        whole = splitting.squeezed_plan(made_speech, made_samples / 16000, 28.0, 0.3, made)
        odd = list(rng.integers(1, 3000, size=len(made) // 200 + 1))
        assert same_plan([chunk for chunk, _ in streamed(made, made_samples, 28.0, 0.3, odd)], whole), trial


def test_a_chunk_never_outgrows_one_window() -> None:
    speech = [(0.0, 50.0), (50.5, 100.0)]  # a single pause, past the first window
    assert splitting.plan(speech, 100.0, 30.0) == [(0.0, 30.0), (30.0, 50.25), (50.25, 80.25), (80.25, 100.0)]
    assert splitting.plan(speech[:1], 50.0, 30.0) == [(0.0, 30.0), (30.0, 50.0)], "no pause: cut at the reach"
    scores = [0.9] * 1000
    scores[900] = 0.1  # the quietest frame of the last two seconds: 28.80 to 28.83 s
    assert splitting.plan(speech[:1], 50.0, 30.0, scores)[0] == (0.0, 28.816), "no pause: cut at the quietest frame"
    assert all(24 <= b - a <= 30 for a, b in splitting.plan([], 100.0, 30.0)[:-1]), "silence: cut near the reach"


def test_stitching_moves_times_to_the_original_timeline_and_renumbers() -> None:
    def segment(index: int, start: float, end: float, text: str) -> Segment:
        return make_segment(index, start, end, text, words=True)

    first, second = Chunk(index=0, start=0.0, end=20.0), Chunk(index=1, start=20.0, end=41.5)
    parts = [
        (second, [shift(segment(1, 0.5, 30.0, " three"), second)]),  # past the chunk's end: kept inside it
        (first, [shift(segment(1, 0.0, 9.0, " one"), first), shift(segment(2, 9.0, 19.5, " two"), first)]),
    ]
    result = stitch(TaskType.TRANSCRIBE, "en", 1.0, 41.5, parts)
    assert [(s.id, s.start, s.end) for s in result.segments] == [(1, 0.0, 9.0), (2, 9.0, 19.5), (3, 20.5, 41.5)]
    assert result.text == "one two three" and result.segments[2].seek == 2000
    moved = result.segments[2].words
    assert moved is not None and (moved[0].start, moved[0].end) == (20.5, 41.5)


def test_a_stitched_result_written_a_chunk_at_a_time_is_the_same_json() -> None:
    chunks = [Chunk(index=i, start=10.0 * i, end=10.0 * (i + 1)) for i in range(3)]

    def parts() -> list[tuple[Chunk, list[Segment]]]:
        return [
            (chunks[0], [make_segment(1, 0.0, 4.0, ' He said "segments":[] aloud', words=True)]),
            (chunks[1], []),  # a chunk of silence
            (chunks[2], [make_segment(1, 20.0, 24.0, " née ünïcode"), make_segment(2, 24.0, 29.0, " two")]),
        ]

    whole = stitch(TaskType.TRANSCRIBE, "en", 0.98, 30.0, parts()).model_dump_json()
    written = rendered(TaskType.TRANSCRIBE, "en", 0.98, 30.0, parts())
    assert written.json == whole and written.duration == 30.0
    assert [s.id for s in Transcript.model_validate_json(written.json).segments] == [1, 2, 3]


# --- Through the service ---------------------------------------------------------------------------------


def seam_errors(reference: str, chunk_texts: list[str]) -> list[int]:
    """Per seam between chunks, the words lost (reference words missing right at it) or doubled (extra words
    touching it), against the reference."""
    words = [normalise(text, "en").split() for text in chunk_texts]
    operations = jiwer.process_words(reference, " ".join(w for chunk in words for w in chunk)).alignments[0]
    seams, position = [], 0
    for chunk in words[:-1]:
        position += len(chunk)
        lost = sum(
            o.ref_end_idx - o.ref_start_idx for o in operations if o.type == "delete" and o.hyp_start_idx == position
        )
        doubled = sum(
            o.hyp_end_idx - o.hyp_start_idx
            for o in operations
            if o.type == "insert" and o.hyp_start_idx <= position <= o.hyp_end_idx
        )
        seams.append(lost + doubled)
    return seams


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["ljspeech-one-worker", "asterisk-five-minutes-two-workers"])
def test_a_long_file_is_split_fanned_out_and_stitched_seamlessly(
    long_api: httpx.Client, start_worker: StartWorker, settings: Settings, workers: int, tmp_path: Path
) -> None:
    # Five minutes of the asterisk prompts are twelve chunks, eleven seams: enough to count seams, a third of the time.
    path = LJSPEECH if workers == 1 else asterisk_head(tmp_path, 300.0)
    task_id = submit(long_api, path, priority="low", word_timestamps="true").json()["id"]
    fleet = [start_worker(burst=False, cpu_threads=2 // workers, **SPLIT) for _ in range(workers)]
    done = finished(long_api, task_id, timeout_s=600)
    for worker in fleet:
        worker.send_signal(signal.SIGTERM)
    assert done["status"] == "completed", done["error"]
    _, _, duration = planned(path, 30.0)
    chunks = squeezed(path, 30.0)
    assert done["chunks"] == done["chunks_done"] == len(chunks) and done["progress"] == 1.0
    assert done["chunk_spans"] == [[round(a, 3), round(b, 3)] for a, b in chunks], "the cuts are recorded on the task"
    result = done["result"]
    assert result["duration"] == pytest.approx(duration, abs=0.01) and result["language"] == "en"

    segments = result["segments"]
    assert [s["id"] for s in segments] == list(range(1, len(segments) + 1))
    times = [t for s in segments for t in (s["start"], s["end"])]
    assert times == sorted(times) and times[-1] <= duration, "segment times run forward on the original timeline"
    words = [t for s in segments for w in s["words"] for t in (w["start"], w["end"])]
    assert words == sorted(words), "word times run forward"
    assert result["text"] == "".join(s["text"] for s in segments).strip()

    starts = [a for a, _ in chunks]
    by_chunk = [" ".join(s["text"] for s in segments if chunk_of(starts, s["start"]) == i) for i in range(len(chunks))]
    assert all(by_chunk), "every chunk has text"
    reference = normalise(path.with_suffix(".txt").read_text(), "en")
    stitched = seam_errors(reference, by_chunk)
    unsplit = unsplit_transcript(path, settings)
    whole = [" ".join(s.text for s in unsplit if chunk_of(starts, s.start) == i) for i in range(len(chunks))]
    baseline = seam_errors(reference, whole)
    # Where the engine reads the words around a seam right in one run, the stitched result must too; where
    # it already drops or adds words there (tiny.en on a list of numbers), a seam proves nothing either way.
    clean = [i for i, errors in enumerate(baseline) if errors == 0]
    assert len(clean) >= 0.7 * len(baseline), baseline
    worse = [(i, stitched[i]) for i in clean if stitched[i]]
    # A window starts without the text before it as its prompt (windows decode in parallel), so its first words can
    # read differently from one long run ("Login incorrect" as "log in and correct"; a list of single letters read
    # short), and CTranslate2's int8 arithmetic differs a little between CPUs: allow one clean seam in ten to differ.
    # Words dropped at seams by the stitching itself show at most seams (five of nine when a window's open last
    # segment was dropped, 3.5 points of WER), and in the whole text: within two points of one long run.
    allowed = max(1, len(clean) // 10)
    words_stitched = normalise(" ".join(by_chunk), "en")
    words_whole = normalise(" ".join(s.text for s in unsplit), "en")
    assert jiwer.wer(reference, words_stitched) <= jiwer.wer(reference, words_whole) + 0.02
    assert len(worse) <= allowed, f"seams (index, words lost or doubled) where the unsplit run has none: {worse}"
    k = next(i for i in clean if not stitched[i])  # a seam stitched right: breaking it must show
    before, after = by_chunk[: k + 1], by_chunk[k + 1 :]
    dropped = [*before, after[0].split(" ", 2)[2], *after[1:]]
    doubled = [*before, " ".join(before[-1].split()[-2:]) + after[0], *after[1:]]
    assert seam_errors(reference, dropped)[k] > 0 < seam_errors(reference, doubled)[k], "the check can fail"

    streamed = [data for kind, data in read_events(long_api, task_id) if kind == "segment"]
    assert {data["chunk"] for data in streamed} == set(range(len(chunks))), "live segments name their chunk"
    spans = done["chunk_spans"]
    assert all(a <= data["segment"]["start"] <= b for data in streamed for a, b in [spans[data["chunk"]]])
    for fmt, first_line in (("srt", "1"), ("vtt", "WEBVTT")):
        rendered = long_api.get(f"/v1/tasks/{task_id}/result", params={"format": fmt})
        assert rendered.status_code == 200 and rendered.text.splitlines()[0] == first_line
    assert list(settings.uploads.iterdir()) == [], "the upload and the chunk audio are gone"


@pytest.mark.parametrize("seconds", [70, 20], ids=["split", "whole"])
def test_a_recording_without_speech_completes_empty(
    long_api: httpx.Client, start_worker: StartWorker, settings: Settings, tmp_path: Path, seconds: int
) -> None:
    import numpy as np
    import soundfile

    quiet = tmp_path / "room_tone.flac"  # a faint noise floor, long enough to be split or not, with no speech
    soundfile.write(quiet, np.random.default_rng(7).normal(0, 0.001, seconds * 16000).astype(np.float32), 16000)
    task_id = submit(long_api, quiet, diarize="true").json()["id"]
    worker = start_worker(burst=False, **SPLIT)
    done = finished(long_api, task_id, timeout_s=180)
    worker.send_signal(signal.SIGTERM)
    assert done["status"] == "completed", done["error"]
    result = done["result"]
    if seconds > SPLIT["split_after_s"]:  # (unsplit, the speaker stage's more sensitive VAD may hear a moment)
        assert done["chunks"] == done["chunks_done"] == 0 and done["chunk_spans"] == [] and result["speakers"] == []
    assert done["progress"] == 1.0 and result["text"] == "" and result["segments"] == []
    assert result["duration"] == pytest.approx(seconds, abs=0.01)
    assert long_api.get(f"/v1/tasks/{task_id}/result", params={"format": "srt"}).text == ""
    assert worker.wait(timeout=30) == 0
    assert list(settings.uploads.iterdir()) == [], "the upload and the spooled audio are gone"


def test_a_volume_that_fills_while_a_long_file_is_cut_fails_the_task_as_storage_full(
    long_api: httpx.Client, start_worker: StartWorker, settings: Settings
) -> None:
    task_id = submit(long_api, LJSPEECH, model="tiny.en").json()["id"]
    raw = settings.uploads / ".chunks" / task_id / "1" / "audio.raw"  # where the first run spools the decoded audio
    raw.parent.mkdir(parents=True)
    raw.symlink_to("/dev/full")  # the kernel answers every write there with ENOSPC, as a full volume does
    worker = start_worker(**SPLIT)
    done = finished(long_api, task_id, timeout_s=120)
    assert done["status"] == "failed" and done["error"]["code"] == "storage_full", done["error"]
    assert "no room" in done["error"]["message"]
    assert worker.wait(timeout=60) == 0, "the worker goes on"
    assert list(settings.uploads.iterdir()) == [], "the upload and the cut audio are gone"


def unsplit_transcript(path: Path, settings: Settings) -> list[Segment]:
    """The raw engine's segments for the whole file in one run: what stitching is held to."""
    from worker.engine import load_engine, transcribe

    engine = load_engine(settings.model_copy(update={"model": "tiny.en"}))
    options = TranscribeOptions(language="en")
    return transcribe(engine, path, TaskType.TRANSCRIBE, options, lambda *_: None).segments


def chunk_jobs_waiting(redis: Redis, task_id: str) -> list[str]:
    names = keys.queue_names("tiny.en")
    return [j for n in names for j in Queue(n, connection=redis).job_ids if j.startswith(f"{task_id}-")]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["cancel", "delete"])
def test_cancel_and_delete_reach_every_chunk(
    long_api: httpx.Client,
    start_worker: StartWorker,
    chunk_store: ChunkStore,
    redis: Redis,
    settings: Settings,
    how: str,
) -> None:
    task_id = submit(long_api, LJSPEECH).json()["id"]
    worker = start_worker(burst=False, worker_ttl_s=5, **SPLIT)
    held_chunk(chunk_store, task_id)
    assert chunk_jobs_waiting(redis, task_id), "other chunks wait their turn"

    if how == "cancel":
        assert long_api.post(f"/v1/tasks/{task_id}/cancel").json()["status"] == "cancelled"
    else:
        assert long_api.delete(f"/v1/tasks/{task_id}").status_code == 204
    assert chunk_jobs_waiting(redis, task_id) == []
    assert chunk_store.load(task_id) is None
    streamed = redis.xlen(keys.events_key(task_id))
    # The chunk in hand stops at its next segment: then the worker holds no job, and no other chunk is left to start.
    wait_for(lambda: not fleet.holdings(redis, [w.id for w in fleet.live_workers(redis)]), timeout_s=120)
    assert list(settings.uploads.iterdir()) == []
    if how == "cancel":
        assert task(long_api, task_id)["status"] == "cancelled" and task(long_api, task_id)["progress"] < 1
        assert redis.xlen(keys.events_key(task_id)) == streamed
    else:
        assert long_api.get(f"/v1/tasks/{task_id}").status_code == 404
        assert not redis.exists(keys.events_key(task_id), keys.task_key(task_id), keys.chunks_key(task_id))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def both_announced(redis: Redis, workers: list[subprocess.Popen[str]]) -> None:
    """Wait until each of these worker processes has loaded its model and announced itself."""

    def announced() -> bool:
        ids = [worker.id for worker in fleet.live_workers(redis)]
        return all(any(f"-{process.pid}-" in worker_id for worker_id in ids) for process in workers)

    wait_for(announced, timeout_s=120)


def decoded_while_split(chunk_store: ChunkStore, task_id: str) -> Any:
    """Wait until a chunk of the task is in hand or done while its split still goes on (its plan open); the plan."""

    def check() -> Any:
        split = chunk_store.load(task_id)
        busy = split is not None and split.duration is None
        return busy and any(c.state in {ChunkStatus.PROCESSING, ChunkStatus.DONE} for c in split.chunks) and split

    return wait_for(check, timeout_s=120, every_s=0.005)


@pytest.mark.slow
def test_chunks_are_decoded_while_the_split_goes_on_and_a_cancel_stops_the_split(
    long_api: httpx.Client, start_worker: StartWorker, chunk_store: ChunkStore, redis: Redis, settings: Settings
) -> None:
    # The 16-minute file's split reads about a second of CPU: long enough for a second worker to take its first chunks,
    # once both have loaded their model.
    fleet_of_two = [start_worker(burst=False, cpu_threads=1, **SPLIT) for _ in range(2)]
    both_announced(redis, fleet_of_two)
    task_id = submit(long_api, ASTERISK, language="en").json()["id"]
    split = decoded_while_split(chunk_store, task_id)
    assert 0 < len(split.chunks) < len(squeezed(ASTERISK, 30.0)), "the plan is open with its first chunks"
    assert task(long_api, task_id)["status"] == "processing"

    assert long_api.post(f"/v1/tasks/{task_id}/cancel").json()["status"] == "cancelled"
    # The split stops at its next chunks, the chunk in hand at its next segment: then no worker holds a job.
    wait_for(lambda: not fleet.holdings(redis, [w.id for w in fleet.live_workers(redis)]), timeout_s=120)
    assert chunk_jobs_waiting(redis, task_id) == [] and chunk_store.load(task_id) is None
    assert list(settings.uploads.iterdir()) == [], "no chunk audio is left, nor what the split cut after the cancel"
    for worker in fleet_of_two:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0


@pytest.mark.slow
def test_a_worker_killed_while_it_splits_loses_nothing(
    long_api: httpx.Client, start_worker: StartWorker, chunk_store: ChunkStore, redis: Redis, settings: Settings
) -> None:
    fleet_of_two = [start_worker(burst=False, cpu_threads=1, worker_ttl_s=5, **SPLIT) for _ in range(2)]
    both_announced(redis, fleet_of_two)
    task_id = submit(long_api, ASTERISK, language="en").json()["id"]
    decoded_while_split(chunk_store, task_id)
    splitter = task(long_api, task_id)["worker"]
    doomed = next(w for w in fleet_of_two if f"-{w.pid}-" in splitter)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()

    # The other worker's janitor finds the split lost and puts the task back whole: it splits it again under a new
    # run, and what was decoded under the old one counts for nothing.
    done = finished(long_api, task_id, timeout_s=600)
    assert done["status"] == "completed", done["error"]
    assert done["attempts"] == 2 and done["chunks"] == done["chunks_done"] == len(squeezed(ASTERISK, 30.0))
    reference = normalise(ASTERISK.with_suffix(".txt").read_text(), "en")
    assert jiwer.wer(reference, normalise(done["result"]["text"], "en")) < 0.15
    times = [t for s in done["result"]["segments"] for t in (s["start"], s["end"])]
    assert times == sorted(times), "one plan's segments, once each"
    assert list(settings.uploads.iterdir()) == [], "the chunk audio of both runs is gone"
    survivor = next(w for w in fleet_of_two if w is not doomed)
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(timeout=30) == 0


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_chunk(
    long_api: httpx.Client, start_worker: StartWorker, chunk_store: ChunkStore, redis: Redis
) -> None:
    task_id = submit(long_api, LJSPEECH).json()["id"]
    doomed = start_worker(burst=False, worker_ttl_s=5, **SPLIT)
    lost = held_chunk(chunk_store, task_id)
    split = chunk_store.load(task_id)
    assert split is not None
    done_before = {c.chunk.index for c in split.chunks if c.state == "done"}
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    rescuer = start_worker(burst=False, worker_ttl_s=5, **SPLIT)

    done = finished(long_api, task_id, timeout_s=180)
    assert done["status"] == "completed" and done["chunks_done"] == done["chunks"]
    text = done["result"]["text"].lower()
    assert text.startswith("printing") and "gothic and roman" in text
    streamed: dict[int, int] = {}
    for _, fields in redis.xrange(keys.events_key(task_id)):
        if fields.get(b"type") == b"segment":
            streamed[int(fields[b"chunk"])] = streamed.get(int(fields[b"chunk"]), 0) + 1
    _, chunks, _ = planned(LJSPEECH, 30.0)
    final = {i: sum(1 for s in done["result"]["segments"] if a <= s["start"] < b) for i, (a, b) in enumerate(chunks)}
    for index in done_before:
        assert streamed[index] == final[index], f"chunk {index}, done before the kill, was transcribed again"
    assert lost.chunk.index not in done_before
    rescuer.send_signal(signal.SIGTERM)
    assert rescuer.wait(timeout=30) == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("long_priority", "clip_priority"),
    [(Priority.LOW, Priority.HIGH), (Priority.NORMAL, Priority.NORMAL)],
    ids=["high-clip-behind-low-file", "same-priority"],
)
def test_a_short_clip_does_not_wait_for_a_whole_long_file(
    long_api: httpx.Client,
    start_worker: StartWorker,
    chunk_store: ChunkStore,
    long_priority: Priority,
    clip_priority: Priority,
) -> None:
    long_id = submit(long_api, LJSPEECH, priority=long_priority.value).json()["id"]
    worker = start_worker(burst=False, **SPLIT)
    held_chunk(chunk_store, long_id)
    clip_id = submit(long_api, JFK, priority=clip_priority.value).json()["id"]
    clip = finished(long_api, clip_id, timeout_s=60)
    assert clip["status"] == "completed"
    long_task = task(long_api, long_id)
    assert long_task["status"] == "processing" and long_task["chunks_done"] < long_task["chunks"]
    assert finished(long_api, long_id)["status"] == "completed"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def test_batched_decoding_reads_what_one_window_at_a_time_reads(settings: Settings) -> None:
    from worker.engine import load_engine, transcribe

    path = DATA / "video" / "ljspeech_LJ001_first60s.mkv"  # two windows and more: a real batch
    texts = []
    for size in (0, 4):
        engine = load_engine(settings.model_copy(update={"model": "tiny.en", "batch_size": size}))
        assert (engine.batched is not None) == (size > 1)
        result = transcribe(engine, path, TaskType.TRANSCRIBE, TranscribeOptions(language="en"), lambda *_: None)
        assert result.duration == pytest.approx(60, abs=0.5) and result.segments[-1].end > 50
        texts.append(normalise(result.text, "en"))
    assert jiwer.wer(texts[0], texts[1]) < 0.1

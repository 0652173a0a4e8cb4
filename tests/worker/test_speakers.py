"""Speaker labels: the voice encoder on real conversations, turns laid on transcripts, and the whole service path."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import httpx
import pytest
from openai import OpenAI
from pyannote.core import Annotation, Timeline  # type: ignore[import-untyped]
from pyannote.core import Segment as Span
from pyannote.metrics.diarization import DiarizationErrorRate  # type: ignore[import-untyped]
from redis import Redis
from rq import Queue

from benchmark.dataset import load_manifest
from shared import keys
from shared.enums import Priority, TaskType
from shared.errors import SpeakersUnavailable
from shared.lifecycle import Lifecycle
from shared.schemas import Segment, TranscribeOptions, Transcript, Word
from shared.settings import Settings
from shared.stores import Stores
from tests.conftest import DATA, JFK, StartWorker, queued_task, submit, wait_for
from worker import chunk_jobs, context, diarization, engine, jobs, speaker_stage, speakers, splitting
from worker.diarization import Diarizer, Piece, Turn
from worker.speaker_stage import Stopped, Turns

CONVERSATIONS = DATA / "diarization"
SAMPLE = CONVERSATIONS / "pyannote_sample.flac"
FALCON = CONVERSATIONS / "falcon_test.flac"
ONE_VOICE = DATA / "video" / "ljspeech_LJ001_first60s.mkv"
# pyannote.metrics removes collar/2 either side of each reference boundary: 0.5 is NIST's 0.25-s collar.
COLLAR = 0.5


def reference(name: str) -> Annotation:
    """The recording's reference turns, from its own RTTM file or the AMI excerpts' shared one."""
    rttm = CONVERSATIONS / f"{name}.rttm"
    turns = Annotation()
    for line in (rttm if rttm.exists() else CONVERSATIONS / "ami_dev.rttm").read_text().splitlines():
        parts = line.split()
        if parts[1] == name:
            turns[Span(float(parts[3]), float(parts[3]) + float(parts[4])), len(turns)] = parts[7]
    return turns


def matches(name: str, segments: list[dict[str, Any]]) -> bool:
    """True when each label stands for one reference speaker and each segment's label is that of the reference
    speaker who talks most within it."""
    truth = reference(name)
    pairs = set()
    for segment in segments:
        spoken = truth.crop(Span(segment["start"], segment["end"]))
        pairs.add((segment["speaker"], spoken.argmax()))
    return len(pairs) == len({label for label, _ in pairs}) == len({speaker for _, speaker in pairs})


def der(name: str, turns: list[Turn] | list[dict[str, Any]]) -> float:
    """The diarization error rate over the whole recording, overlapped speech scored."""
    hypothesis = Annotation()
    for index, turn in enumerate(turns):
        start, end, who = (turn.start, turn.end, turn.speaker) if isinstance(turn, Turn) else turn.values()
        hypothesis[Span(start, end), index] = who
    whole = Timeline([Span(0, splitting.decode(CONVERSATIONS / f"{name}.flac", 600).size / 16000)])
    return float(DiarizationErrorRate(collar=COLLAR)(reference(name), hypothesis, uem=whole))


@pytest.fixture(scope="module")
def diarizer() -> Diarizer:
    return Diarizer("cpu")


def labels(turns: list[Turn]) -> set[str]:
    return {turn.speaker for turn in turns}


def test_two_speakers_of_the_pyannote_sample_match_its_reference(diarizer: Diarizer) -> None:
    audio = splitting.decode(SAMPLE, 60)
    two = diarizer.turns(audio, num_speakers=2)
    assert labels(two) == {"SPEAKER_00", "SPEAKER_01"}
    assert der("pyannote_sample", two) < 0.15  # measured 5 %
    found = diarizer.turns(audio)  # the count found alone
    assert len(labels(found)) == 2 and der("pyannote_sample", found) < 0.15  # measured 7 %


def test_three_speakers_one_after_another_are_told_apart_and_counted(diarizer: Diarizer) -> None:
    audio = splitting.decode(FALCON, 60)
    found = diarizer.turns(audio)
    assert len(labels(found)) == 3 and der("falcon_test", found) < 0.05  # measured 0 %
    assert len(labels(diarizer.turns(audio, max_speakers=2))) == 2
    assert len(labels(diarizer.turns(audio, num_speakers=2))) == 2
    assert len(labels(diarizer.turns(audio, min_speakers=2, max_speakers=3))) == 3


def test_a_built_two_speaker_conversation_is_labelled_like_its_reference(diarizer: Diarizer) -> None:
    """Two people (the LJSpeech reader and a digit speaker) for two and a half minutes, as the benchmark builds it."""
    from benchmark import conversations

    built = conversations.build(
        "conv2_04", conversations.PLANS["conv2_04"], load_manifest(DATA / "manifest.tsv"), conversations.SEED
    )
    truth = Annotation()
    for turn in built.turns:
        truth[Span(turn.start, turn.end)] = turn.speaker
    found = diarizer.turns(built.audio)
    hypothesis = Annotation()
    for index, turn in enumerate(found):
        hypothesis[Span(turn.start, turn.end), index] = turn.speaker
    whole = Timeline([Span(0, built.seconds)])
    assert len(labels(found)) == 2
    assert DiarizationErrorRate(collar=COLLAR)(truth, hypothesis, uem=whole) < 0.12  # measured 4.5 %


def test_people_talking_over_each_other_both_get_the_time(diarizer: Diarizer) -> None:
    """An AMI meeting excerpt where a third of the speech is two people at once. A labeller that gives each moment
    one speaker cannot score under 28.7 % here (the reference with each overlap given to one speaker)."""
    turns = diarizer.turns(splitting.decode(CONVERSATIONS / "ami_trn09.flac", 60))
    together = [
        (first, second)
        for index, first in enumerate(turns)
        for second in turns[index + 1 :]
        if second.start < first.end and second.speaker != first.speaker
    ]
    assert sum(min(a.end, b.end) - b.start for a, b in together) > 5, "overlaps found, in seconds"
    assert der("ami_trn09", turns) < 0.2  # measured 13.2 %


def test_speech_the_vad_missed_and_overlaps_get_the_nearest_speakers() -> None:
    """The rules alone: heard speech outside every turn takes the nearest turn's speaker; an overlap takes the
    nearest speaker other than the one speaking there; an overlap where nobody has a turn adds nothing."""
    turns = [Turn(0.0, 2.0, "a"), Turn(3.0, 5.0, "b"), Turn(5.0, 9.0, "a")]
    filled = diarization.filled(turns, [(1.5, 2.8), (9.0, 9.1), (9.5, 10.0)])
    assert filled == sorted([*turns, Turn(2.0, 2.8, "a"), Turn(9.5, 10.0, "a")], key=lambda turn: turn.start)
    assert diarization.filled([], [(1.0, 2.0)]) == [Turn(1.0, 2.0, "0")], "no turns: one speaker"
    together = diarization.overlapped(turns, [(6.0, 7.0), (1.0, 1.5), (10.0, 11.0)])
    assert together == sorted([*turns, Turn(6.0, 7.0, "b"), Turn(1.0, 1.5, "b")], key=lambda turn: turn.start)


def test_one_voice_gets_one_label(diarizer: Diarizer) -> None:
    for media in (JFK, ONE_VOICE):
        audio = splitting.decode(media, 120)
        turns = diarizer.turns(audio)
        assert labels(turns) == {"SPEAKER_00"}, media.name
        assert turns[0].start < 1.5 and turns[-1].end > 0.8 * audio.size / 16000
    assert len(labels(diarizer.turns(audio, min_speakers=2))) == 2, "a bound given is honoured"


def test_turns_are_worked_out_on_their_own_thread_from_the_moment_they_are_asked_for(diarizer: Diarizer) -> None:
    """A task's turns begin as its decode does (they need only the audio), with no one waiting on them, and come
    out as the encoder gives them in one go."""
    read_from = threading.Event()

    def read() -> Iterator[Piece]:
        read_from.set()
        yield from speaker_stage.media_pieces(SAMPLE, 600)

    turns = Turns(diarizer.turns_of, read)
    assert read_from.wait(60), "the audio is read before anyone asks for the turns"
    assert turns.result() == diarizer.turns_of(lambda: speaker_stage.media_pieces(SAMPLE, 600))
    assert len(labels(turns.result())) == 2 and turns.seconds > 0


def test_turns_no_longer_wanted_stop_at_the_next_piece_and_a_failure_reaches_the_task() -> None:
    audio = splitting.decode(SAMPLE, 600)
    stop_asked = threading.Event()

    def read() -> Iterator[Piece]:
        yield Piece(0.0, audio[:160000])
        assert stop_asked.wait(60)
        yield Piece(10.0, audio[160000:])

    def work(pieces: Callable[[], Iterator[Piece]]) -> list[Turn]:
        return [Turn(piece.offset, piece.offset + 1, "0") for piece in pieces()]

    stopped = Turns(work, read)
    stopped.stop()
    stop_asked.set()
    with pytest.raises(Stopped):
        stopped.result()

    def unavailable(pieces: Callable[[], Iterator[Piece]]) -> list[Turn]:
        raise SpeakersUnavailable("no encoder here")

    with pytest.raises(SpeakersUnavailable, match="no encoder here"):
        Turns(unavailable, read).result()
    assert Turns(work, lambda: iter([Piece(0.0, audio), Piece(30.0, audio)])).result() == [
        Turn(0.0, 1.0, "0"), Turn(30.0, 31.0, "0")
    ]  # fmt: skip


def segment(start: float, end: float, text: str, words: list[Word] | None = None) -> Segment:
    return Segment(
        id=1, seek=0, start=start, end=end, text=text, tokens=[1], avg_logprob=-0.1, compression_ratio=1.0,
        no_speech_prob=0.0, words=words,
    )  # fmt: skip


def transcript(*segments: Segment) -> Transcript:
    text = "".join(s.text for s in segments).strip()
    return Transcript(
        task=TaskType.TRANSCRIBE,
        language="en",
        language_probability=1.0,
        duration=10,
        text=text,
        segments=list(segments),
    )


def test_a_segment_two_speakers_share_is_split_where_the_speaker_changes() -> None:
    turns = [Turn(0.0, 2.0, "SPEAKER_00"), Turn(2.2, 6.0, "SPEAKER_01"), Turn(6.1, 6.3, "SPEAKER_00")]
    words = [
        Word(start=0.1, end=0.9, word=" Hello", probability=1.0),
        Word(start=1.0, end=1.9, word=" there.", probability=1.0),
        Word(start=2.3, end=3.0, word=" Hi,", probability=1.0),
        Word(start=3.1, end=3.9, word=" you.", probability=1.0),
    ]
    tokenize: speakers.Tokenize = lambda text: [len(text)]  # noqa: E731
    timed = speakers.attach(transcript(segment(0.0, 4.0, " Hello there. Hi, you.", words)), turns, tokenize)
    assert [(s.speaker, s.text, s.start, s.end) for s in timed.segments] == [
        ("SPEAKER_00", " Hello there.", 0.0, 1.9),
        ("SPEAKER_01", " Hi, you.", 2.3, 4.0),
    ]
    assert [w.speaker for s in timed.segments for w in s.words or []] == ["SPEAKER_00"] * 2 + ["SPEAKER_01"] * 2
    assert [s.id for s in timed.segments] == [1, 2] and timed.segments[1].tokens == [len(" Hi, you.")]
    assert timed.text == "Hello there. Hi, you."
    summary = [(s.speaker, s.seconds, s.turns) for s in timed.speakers or []]
    assert summary == [("SPEAKER_00", 2.2, 2), ("SPEAKER_01", 3.8, 1)]
    # Without word timings, the text is spread over the segment's time and split the same way.
    guessed = speakers.attach(transcript(segment(0.0, 4.0, " Hello there. Hi, you.")), turns, tokenize)
    assert [(s.speaker, s.text) for s in guessed.segments] == [
        ("SPEAKER_00", " Hello there."),
        ("SPEAKER_01", " Hi, you."),
    ]
    assert all(s.words is None for s in guessed.segments)


def test_a_lone_word_across_a_boundary_keeps_its_neighbours_speaker() -> None:
    turns = [Turn(0.0, 1.05, "SPEAKER_00"), Turn(1.05, 1.3, "SPEAKER_01"), Turn(1.3, 3.0, "SPEAKER_00")]
    words = [Word(start=t, end=t + 0.4, word=f" w{i}", probability=1.0) for i, t in enumerate((0.0, 1.0, 1.5))]
    timed = speakers.attach(transcript(segment(0.0, 2.0, " w0 w1 w2", words)), turns, lambda text: [])
    assert [s.speaker for s in timed.segments] == ["SPEAKER_00"]


# The service: options, stage, formats, global labels over a split file, the OpenAI shape.


def fetch(api: httpx.Client, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/tasks/{task_id}").json()
    return body


def done(api: httpx.Client, task_id: str) -> dict[str, Any]:
    task = wait_for(lambda: (t := fetch(api, task_id))["status"] in ("completed", "failed") and t, timeout_s=240)
    assert task["status"] == "completed", task["error"]
    return task  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_diarized_task_shows_its_stage_and_carries_speakers_in_every_format(
    api: httpx.Client, start_worker: StartWorker
) -> None:
    task_id = submit(api, FALCON, diarize="true", word_timestamps="true").json()["id"]
    start_worker(burst=False)
    task = done(api, task_id)
    assert task["stage"] is None and 0 < task["diarization_seconds"] < task["processing_seconds"]
    result = task["result"]
    found = {s["speaker"] for s in result["speakers"]}
    assert len(found) == 3 and {s["speaker"] for s in result["segments"]} == found
    assert all(w["speaker"] in found for s in result["segments"] for w in s["words"])
    assert (
        der(
            "falcon_test", [{"start": s["start"], "end": s["end"], "speaker": s["speaker"]} for s in result["segments"]]
        )
        < 0.2
    )
    events = api.get(f"/v1/tasks/{task_id}/events").text
    assert 'event: stage\r\ndata: {"stage": "diarizing"}' in events
    bodies = {fmt: api.get(f"/v1/tasks/{task_id}/result", params={"format": fmt}).text for fmt in FORMATS}
    for label in found:
        assert f"[{label}] " in bodies["srt"] and f"<v {label}>" in bodies["vtt"] and f"\t{label}\t" in bodies["tsv"]
        assert f"{label}: " in bodies["text"] and label in bodies["json"]
    assert bodies["tsv"].startswith("start\tend\tspeaker\ttext\n") and len(bodies["text"].splitlines()) >= 3
    verbose = json.loads(bodies["verbose_json"])
    assert {s["speaker"] for s in verbose["segments"]} == found and verbose["speakers"] == result["speakers"]
    metrics = api.get("/metrics").text
    assert 'whisperq_diarization_seconds_count{model="tiny.en"} 1.0' in metrics


FORMATS = ["json", "verbose_json", "text", "srt", "vtt", "tsv"]


@pytest.mark.slow
def test_a_file_split_across_two_workers_keeps_one_set_of_labels(api: httpx.Client, start_worker: StartWorker) -> None:
    """Falcon's second speaker talks across the cut: a label per chunk would give four or more speakers."""
    task_id = submit(api, FALCON, diarize="true").json()["id"]
    workers = [start_worker(burst=False, split_after_s=8.0, chunk_target_s=8.0, cpu_threads=1) for _ in range(2)]
    task = done(api, task_id)
    assert task["chunks"] >= 2
    assert any("decoding a batch" in worker.log.text for worker in workers)
    assert any("speaker turns worked out while it was cut" in worker.log.text for worker in workers), "by the split"
    result = task["result"]
    assert len(result["speakers"]) == 3
    assert matches("falcon_test", result["segments"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"num_speakers": "2"}, "num_speakers needs diarize=true"),
        ({"diarize": "true", "num_speakers": "2", "max_speakers": "3"}, "not both"),
        ({"diarize": "true", "min_speakers": "3", "max_speakers": "2"}, "min_speakers is more than max_speakers"),
        ({"diarize": "true", "num_speakers": "0"}, "greater than or equal to 1"),
        ({"diarize": "true", "max_speakers": "500"}, "less than or equal to 20"),
        ({"diarize": "maybe"}, "valid boolean"),
    ],
)
def test_bad_speaker_options_are_refused(
    api: httpx.Client, served: Callable[[str], None], fields: dict[str, str], message: str
) -> None:
    served("tiny.en")
    answer = submit(api, JFK, **cast(dict[str, Any], fields))
    assert answer.status_code == 422 and message in answer.text, answer.text


@pytest.mark.slow
def test_the_openai_client_reads_diarized_json(api: httpx.Client, start_worker: StartWorker) -> None:
    start_worker(burst=False)
    wait_for(lambda: api.get("/health").json()["models"] == ["tiny.en"])
    with OpenAI(base_url=f"{api.base_url}/v1", api_key="not-needed", max_retries=0) as client, FALCON.open("rb") as f:
        answer = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="diarized_json")
    assert answer.task == "transcribe" and answer.duration == pytest.approx(18.6, abs=0.1)
    assert {segment.speaker for segment in answer.segments} == {"A", "B", "C"}
    assert all(segment.type == "transcript.text.segment" and segment.text for segment in answer.segments)
    assert answer.usage is not None and answer.usage.type == "duration"


def test_the_mel_filter_bank_is_the_one_the_encoder_was_trained_on() -> None:
    import librosa

    ours = diarization.mel_filters().numpy()
    assert ours.shape == (40, 201)
    assert abs(ours - librosa.filters.mel(sr=16000, n_fft=400, n_mels=40)).max() < 1e-7


def test_the_weights_ship_in_the_installed_package() -> None:
    from worker import segmentation
    from worker.diarization import weights_path

    assert weights_path().is_file() and weights_path().stat().st_size > 10_000_000
    assert segmentation.weights_path().is_file() and segmentation.weights_path().stat().st_size > 5_000_000


class Died(BaseException):
    """The worker dies at this point."""


@pytest.mark.slow
def test_a_split_file_whose_last_chunk_worker_died_before_its_stitch_is_labelled_by_another_worker(
    api: httpx.Client,
    redis: Redis,
    settings: Settings,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every chunk is done, but the worker that finished the last one died before its stitch: another worker
    stitches it, speaker labels and all (the janitor that finds it has no voice encoder)."""
    short = {"split_after_s": 8.0, "chunk_target_s": 8.0}
    settings = settings.model_copy(update=short)
    stores = Stores.open(redis, settings)
    task = queued_task(redis, stores, media=FALCON, enqueue=False, options=TranscribeOptions(diarize=True))
    tiny = engine.load_engine(settings.model_copy(update={"model": "tiny.en"}))
    ctx = context.WorkerContext("gone", redis, settings, tiny, stores, Lifecycle(redis, stores, False))
    monkeypatch.setattr(context, "_current", ctx)
    jobs.transcribe(task.id)  # split by a worker that never announced itself, so it counts as lost

    def dies(*args: Any) -> None:
        raise Died

    monkeypatch.setattr(chunk_jobs, "_stitch", dies)
    queue = Queue(keys.queue_name("tiny.en", Priority.NORMAL), connection=redis)
    with pytest.raises(Died):
        while job_id := cast(bytes | None, redis.lpop(queue.key)):
            chunk_jobs.transcribe_chunk(task.id, int(job_id.decode().rpartition("-")[2]))
    split = stores.chunks.load(task.id)
    assert split is not None and split.complete and len(split.chunks) >= 2

    worker = start_worker(burst=False, worker_ttl_s=5, **short)
    finished = done(api, task.id)
    assert len(finished["result"].get("speakers") or []) == 3
    assert matches("falcon_test", finished["result"]["segments"])
    worker.log.wait_for(f"task {task.id}: stitching it, for the worker that decoded its last chunk")

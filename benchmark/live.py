"""`python -m benchmark.live`: live sessions measured as a client hears them.

Real dev clips, joined by pauses of 1 to 2 s, are streamed at real-time pace through `/v1/realtime` of a stack
started here (embedded Redis, the API, a batch worker and a live worker), N sessions at once. Printed per model and N:
- final latency: from the end of each clip (the audio's own time) to its `completed` event, p50 and p95;
- first delta: from the start of each clip to the first delta of its text, p50;
- WER of the joined finals, beside the WER of the same joined audio transcribed offline by the engine;
- with --backlog, the same while the batch worker (or the one worker, with --layout both) works through long files.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.sync.client import connect

from benchmark.dataset import Clip, Filters, load_manifest
from benchmark.scoring import error_rates, normalise
from benchmark.service import local_service
from shared.settings import Settings

RATE = 24000
CHUNK_S = 0.1
LONG_FILE = Path("../shared/data/long/ljspeech_LJ001_0001-0032_continuous.flac")


@dataclass
class Conversation:
    """Clips joined by pauses, as PCM16 at 24 kHz, and where each clip starts and ends (s)."""

    pcm: bytes
    spans: list[tuple[float, float]]
    references: list[str]


@dataclass
class Heard:
    """What one session's client received, with arrival times relative to the audio's start."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)


def conversation(clips: list[Clip], seed: int) -> Conversation:
    """The clips in a seeded order, each followed by 1 to 2 s of silence; 1 s of silence leads."""
    from faster_whisper import decode_audio

    rng = random.Random(seed)
    order = clips[:]
    rng.shuffle(order)
    parts, spans, position = [np.zeros(RATE, np.float32)], [], 1.0
    for clip in order:
        samples = decode_audio(str(clip.audio), sampling_rate=RATE)
        spans.append((position, position + len(samples) / RATE))
        pause = rng.uniform(1.0, 2.0)
        parts += [samples, np.zeros(int(pause * RATE), np.float32)]
        position += len(samples) / RATE + int(pause * RATE) / RATE
    pcm = (np.clip(np.concatenate(parts), -1, 1) * 32767).astype("<i2").tobytes()
    return Conversation(pcm, spans, [clip.reference for clip in order])


def stream(url: str, talk: Conversation, heard: Heard, language: str | None) -> None:
    """One session: the audio at real-time pace, then a commit whose answer marks the end of the session's events."""
    with connect(url.replace("http://", "ws://") + "/v1/realtime?intent=transcription", max_size=None) as ws:
        update = {
            "type": "transcription",
            "audio": {"input": {"transcription": {"model": "whisper-1", "language": language}}},
        }
        ws.send(json.dumps({"type": "session.update", "session": update}))
        started = time.monotonic()
        receiver = threading.Thread(target=_receive, args=(ws, heard, started), daemon=True)
        receiver.start()
        size = int(RATE * CHUNK_S) * 2
        for number, offset in enumerate(range(0, len(talk.pcm), size)):
            delay = started + number * CHUNK_S - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            chunk = base64.b64encode(talk.pcm[offset : offset + size]).decode()
            ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
        receiver.join(timeout=120)


def _receive(ws: Any, heard: Heard, started: float) -> None:
    """Events until the closing commit is answered and every committed turn has its final text."""
    committed = completed = 0
    answered = False
    for message in ws:
        event = json.loads(message)
        heard.events.append((time.monotonic() - started, event))
        committed += event["type"] == "input_audio_buffer.committed"
        completed += event["type"].endswith("transcription.completed")
        answered = answered or event["type"] == "error"
        if answered and committed == completed:
            return


@dataclass
class Figures:
    """One session's figures."""

    final_latencies: list[float]
    first_deltas: list[float]
    transcript: str


def figures(talk: Conversation, heard: Heard) -> Figures:
    """Latencies per clip and the joined finals."""
    stopped = {e["item_id"]: e["audio_end_ms"] / 1000 for _, e in heard.events if e["type"].endswith("speech_stopped")}
    started = {
        e["item_id"]: e["audio_start_ms"] / 1000 for _, e in heard.events if e["type"].endswith("speech_started")
    }
    done = [(t, e) for t, e in heard.events if e["type"].endswith("transcription.completed")]
    deltas = [(t, e) for t, e in heard.events if e["type"].endswith("transcription.delta")]
    final_latencies, first_deltas = [], []
    for begin, end in talk.spans:
        # The turn that ends the clip: the first whose speech stopped after the clip's end.
        closing = [t for t, e in done if stopped.get(e["item_id"], 0) >= end - 0.05]
        if closing:
            final_latencies.append(min(closing) - end)
        inside = [t for t, e in deltas if begin - 0.5 <= started.get(e["item_id"], -1) <= end]
        if inside:
            first_deltas.append(min(inside) - begin)
    return Figures(final_latencies, first_deltas, " ".join(e["transcript"] for _, e in done))


def offline_text(model: str, talk: Conversation, language: str | None) -> str:
    """The same joined audio transcribed whole by the engine, as a batch task would be."""
    from worker.streaming import Pcm16Input

    samples = Pcm16Input(RATE).samples(talk.pcm)
    whisper = _engine(model)
    segments, _ = whisper.transcribe(samples, language=language, beam_size=5)
    return " ".join(segment.text.strip() for segment in segments)


@lru_cache(maxsize=2)
def _engine(model: str) -> Any:
    from faster_whisper import WhisperModel

    from worker.models import resolve_model

    settings = Settings()
    assert settings.model_cache_dir is not None
    path = resolve_model(model, settings.model_cache_dir, settings.allow_download)
    return WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=2)


def percentile(values: list[float], share: float) -> float:
    """The value below which this share of the values lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))] if ordered else float("nan")


def run_sessions(url: str, talks: list[Conversation], language: str | None) -> list[Figures]:
    """N sessions at once, one conversation each."""
    heard = [Heard() for _ in talks]
    threads = [
        threading.Thread(target=stream, args=(url, talk, h, language)) for talk, h in zip(talks, heard, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [figures(talk, h) for talk, h in zip(talks, heard, strict=True)]


def backlog(url: str, files: int) -> None:
    """Give the batch side long files to work through while the sessions run."""
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(files):
            with LONG_FILE.open("rb") as media:
                client.post("/v1/tasks", files={"file": media}, data={"priority": "low"}).raise_for_status()


def dev_pool(manifest: Path) -> list[Clip]:
    """English dev clips with exact references, 3 to 15 s long."""
    with manifest.open(newline="") as handle:
        dev = {row["id"] for row in csv.DictReader(handle, delimiter="\t") if row.get("split") == "dev"}
    english = Filters(languages=frozenset({"en"}), ref_qualities=frozenset({"exact"}), min_duration=3.0)
    clips = english.apply(load_manifest(manifest))
    return [clip for clip in clips if clip.id in dev and clip.duration is not None and clip.duration <= 15.0]


HEADER = (
    "| model | layout | sessions | backlog | finals / clips | final p50 s | final p95 s | first delta p50 s "
    "| WER live | WER offline |\n|---|---|---|---|---|---|---|---|---|---|"
)


def measure(url: str, args: argparse.Namespace, model: str, sessions: int, pool: list[Clip]) -> str:
    """One table row: `repeat` rounds of N sessions at once, their figures pooled."""
    results: list[Figures] = []
    talks: list[Conversation] = []
    for repeat in range(args.repeat):
        if args.backlog:
            backlog(url, args.backlog)
        rng = random.Random(1000 * repeat + sessions)
        round_talks = [conversation(rng.sample(pool, args.clips), rng.randrange(10**6)) for _ in range(sessions)]
        results += run_sessions(url, round_talks, "en")
        talks += round_talks
    finals = [x for f in results for x in f.final_latencies]
    deltas = [x for f in results for x in f.first_deltas]
    refs = [normalise(" ".join(t.references), "en") for t in talks]
    live_wer = error_rates(refs, [normalise(f.transcript, "en") for f in results])[0]
    offline_wer = error_rates(refs, [normalise(offline_text(model, t, "en"), "en") for t in talks])[0]
    clips = sum(len(t.spans) for t in talks)
    return (
        f"| {model} | {args.layout} | {sessions} | {args.backlog} | {len(finals)} / {clips} | "
        f"{statistics.median(finals):.2f} | {percentile(finals, 0.95):.2f} | {statistics.median(deltas):.2f} | "
        f"{100 * live_wer:.1f}% | {100 * offline_wer:.1f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.live", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny.en", help="comma-separated (default: tiny.en)")
    parser.add_argument("--sessions", default="1", help="concurrent sessions to try, comma-separated (default: 1)")
    parser.add_argument("--clips", type=int, default=8, help="dev clips per conversation (default: 8)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per setting; figures pooled (default: 1)")
    parser.add_argument("--backlog", type=int, default=0, help="long files queued for the batch side each round")
    parser.add_argument(
        "--layout",
        choices=["dedicated", "both"],
        default="dedicated",
        help="a live worker beside a batch worker, or one worker serving both (default: dedicated)",
    )
    parser.add_argument("--manifest", type=Path, default=Path("../shared/data/manifest.tsv"))
    args = parser.parse_args()
    pool = dev_pool(args.manifest)
    print(f"{len(pool)} English dev clips of 3 to 15 s; {args.clips} per conversation")
    print(HEADER, flush=True)
    for model in args.models.split(","):
        overrides = {
            "live_model": model,
            "live_slots": 32,
            "max_live_sessions_per_key": 32,
            "role": "both" if args.layout == "both" else "batch",
        }
        live_workers = 0 if args.layout == "both" else 1
        with local_service(Settings().model_copy(update=overrides), model, 1, live_workers) as service:
            for sessions in [int(n) for n in args.sessions.split(",")]:
                print(measure(service.url, args, model, sessions, pool), flush=True)


if __name__ == "__main__":
    main()

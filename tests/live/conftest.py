"""Live sessions against the real stack: the API on loopback, a live worker process with tiny.en, real speech."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from redis import Redis
from websockets.sync.client import ClientConnection, connect

from shared import fleet
from tests.conftest import JFK, Spawned, StartWorker, wait_for


def pcm16(path: Path, rate: int = 24000) -> bytes:
    """A clip as PCM16 mono at this rate."""
    from faster_whisper import decode_audio

    samples = decode_audio(str(path), sampling_rate=rate)
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def silence(seconds: float, rate: int = 24000) -> bytes:
    return bytes(int(seconds * rate) * 2)


def append_event(pcm: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()})


def paced(pcm: bytes, rate: int = 24000, chunk_s: float = 0.1, speed: float = 1.0) -> Iterator[bytes]:
    """The audio in chunks, each yielded when a real-time (times speed) client would send it."""
    size = int(rate * chunk_s) * 2
    started = time.monotonic()
    for number, offset in enumerate(range(0, len(pcm), size)):
        delay = started + number * chunk_s / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield pcm[offset : offset + size]


def socket_url(api: httpx.Client) -> str:
    return str(api.base_url).replace("http://", "ws://") + "/v1/realtime?intent=transcription"


def receive_until(ws: ClientConnection, wanted: str, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Every event up to and including the first of type `wanted`."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while not events or events[-1]["type"] != wanted:
        events.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
    return events


@pytest.fixture
def live_worker(start_worker: StartWorker, redis: Redis) -> Callable[..., Spawned]:
    """Start a live worker (tiny.en) and wait until it has announced itself."""

    def start(**overrides: Any) -> Spawned:
        worker = start_worker("tiny.en", burst=False, role="live", **overrides)
        wait_for(lambda: any(w.live_slots for w in fleet.live_workers(redis)) or worker.poll() is not None, 120)
        assert worker.poll() is None, worker.log.text[-3000:]
        return worker

    return start


__all__ = ["JFK", "append_event", "connect", "paced", "pcm16", "receive_until", "silence", "socket_url"]

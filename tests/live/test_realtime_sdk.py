"""The official openai SDK's realtime client, unmodified, against whisperq on loopback: real speech in at real-time
pace, deltas while it is spoken, finals that match the words."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import jiwer
from openai import OpenAI
from redis import Redis
from whisper_normalizer.english import EnglishTextNormalizer

from tests.conftest import manifest, wait_for
from tests.live.conftest import JFK, paced, pcm16, silence

REFERENCE = manifest()["fw_jfk"]["reference"]


def test_sdk_streams_jfk_and_gets_deltas_then_a_final(api_factory: Any, live_worker: Any, redis: Redis) -> None:
    api: httpx.Client = api_factory(live_model="tiny.en")
    live_worker()
    client = OpenAI(base_url=f"{api.base_url}/v1", api_key="unused")
    events: list[tuple[float, Any]] = []
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        created = connection.recv()
        assert created.type == "session.created"
        connection.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        assert connection.recv().type == "session.updated"
        for chunk in paced(pcm16(JFK) + silence(1.5)):
            connection.input_audio_buffer.append(audio=base64.b64encode(chunk).decode())
        # A commit after the trailing silence finds no speech left: its error comes after every turn has been
        # committed; the finals of the last turns may still follow.
        connection.input_audio_buffer.commit()
        deadline = time.monotonic() + 60
        while not _settled([event for _, event in events]):
            assert time.monotonic() < deadline, [event.type for _, event in events]
            events.append((time.monotonic(), connection.recv()))
        session_id = created.session.id  # type: ignore[union-attr]
    kinds = [event.type for _, event in events]
    assert "input_audio_buffer.speech_started" in kinds
    assert kinds.count("input_audio_buffer.speech_started") == kinds.count("input_audio_buffer.committed")
    completed = [event for _, event in events if event.type.endswith("transcription.completed")]
    deltas = [event for _, event in events if event.type.endswith("transcription.delta")]
    first_completed = kinds.index(completed[0].type)
    assert deltas and kinds.index(deltas[0].type) < first_completed, kinds
    transcript = " ".join(event.transcript for event in completed)
    normalise = EnglishTextNormalizer()
    assert jiwer.wer(normalise(REFERENCE), normalise(transcript)) <= 0.15, transcript
    # The deltas say mostly what the finals say. They settle early and are never taken back, so they can differ:
    # tiny.en hears JFK's "what your country" as "like your country" until 2.3 s of it, in two decodes running.
    said = " ".join("".join(d.delta for d in deltas if d.item_id == done.item_id) for done in completed)
    assert jiwer.wer(normalise(transcript), normalise(said)) <= 0.4, (said, transcript)
    # Nothing of the session stays in Redis once it is over.
    wait_for(lambda: not list(redis.scan_iter(f"whisperq:live:{session_id}:*")), 30)
    assert redis.zcard("whisperq:live:open") == 0


def _settled(events: list[Any]) -> bool:
    """The closing commit has been answered, and every committed turn has its final text."""
    kinds = [event.type for event in events]
    if "error" not in kinds:
        return False
    assert [e.error.code for e in events if e.type == "error"] == ["input_audio_buffer_commit_empty"], events
    return kinds.count("input_audio_buffer.committed") == kinds.count(
        "conversation.item.input_audio_transcription.completed"
    )

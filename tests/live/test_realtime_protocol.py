"""The live socket as a resource: bad events, keys, limits, idle and long sessions, clients that vanish."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from typing import Any

import jiwer
import pytest
from redis import Redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from whisper_normalizer.english import EnglishTextNormalizer

from shared import keys, live
from shared.live import Command, Event, LiveConfig
from shared.settings import ApiKey
from tests.conftest import manifest, wait_for
from tests.live.conftest import JFK, append_event, connect, pcm16, receive_until, silence, socket_url


def _open(api: Any, **options: Any) -> ClientConnection:
    ws = connect(socket_url(api), **options)
    assert json.loads(ws.recv(timeout=10))["type"] == "session.created"
    return ws


def _closed_with(ws: ClientConnection, timeout_s: float = 30) -> tuple[list[dict[str, Any]], int | None]:
    """Every event until the server closes the socket, and the close code."""
    events = []
    try:
        while True:
            events.append(json.loads(ws.recv(timeout=timeout_s)))
    except ConnectionClosed as closed:
        return events, closed.rcvd.code if closed.rcvd else None


def _error(ws: ClientConnection) -> dict[str, Any]:
    event = json.loads(ws.recv(timeout=10))
    assert event["type"] == "error", event
    return dict(event["error"])


def test_every_bad_event_is_an_error_event_and_the_session_goes_on(api_factory: Any) -> None:
    api = api_factory(live_max_frame_bytes=10_000)
    with _open(api) as ws:
        cases = [
            (b"\x00\x01", "invalid_event"),
            ("{not json", "invalid_json"),
            ('["a list"]', "invalid_event"),
            ('{"type": "response.create"}', "unknown_event"),
            ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_value"),
            ('{"type": "input_audio_buffer.append", "audio": 5}', "invalid_value"),
            (append_event(b"\x00\x01\x02"), "invalid_audio_format"),
            (append_event(bytes(20_000)), "frame_too_large"),
            ('{"type": "input_audio_buffer.commit"}', "input_audio_buffer_commit_empty"),
            (_update({"format": {"type": "audio/pcmu"}}), "unsupported_audio_format"),
            (_update({"format": {"type": "audio/pcm", "rate": 8000}}), "unsupported_audio_format"),
            (_update({"turn_detection": {"type": "server_vad", "threshold": 2}}), "invalid_value"),
            (_update({"transcription": {"model": "whisper-1", "language": "klingon"}}), "invalid_value"),
        ]
        for frame, code in cases:
            ws.send(frame)
            assert _error(ws)["code"] == code, frame
        ws.send('{"type": "input_audio_buffer.append", "audio": "%", "event_id": "mine"}')
        assert _error(ws)["event_id"] == "mine"  # the client's event id comes back with its error
        ws.send('{"type": "input_audio_buffer.clear"}')
        assert json.loads(ws.recv(timeout=10))["type"] == "input_audio_buffer.cleared"
        ws.send(_update({"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}))
        updated = json.loads(ws.recv(timeout=10))
        assert updated["type"] == "session.updated"
        assert updated["session"]["audio"]["input"]["format"]["rate"] == 16000
        assert updated["session"]["audio"]["input"]["turn_detection"] is None


def _update(audio_input: dict[str, Any]) -> str:
    return json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}})


def test_manual_commit_at_16_khz_transcribes_the_buffer(api_factory: Any, live_worker: Any) -> None:
    api = api_factory(live_model="tiny.en")
    live_worker()
    with _open(api) as ws:
        ws.send(_update({"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}))
        receive_until(ws, "session.updated")
        audio = pcm16(JFK, 16000)
        for offset in range(0, len(audio), 64_000):
            ws.send(append_event(audio[offset : offset + 64_000]))
        ws.send('{"type": "input_audio_buffer.commit"}')
        events = receive_until(ws, "conversation.item.input_audio_transcription.completed")
    kinds = [event["type"] for event in events]
    assert kinds[0] == "input_audio_buffer.committed" and "input_audio_buffer.speech_started" not in kinds
    completed = events[-1]
    assert completed["item_id"] == events[0]["item_id"]
    assert completed["usage"] == {"type": "duration", "seconds": pytest.approx(11.0, abs=0.05)}
    normalise = EnglishTextNormalizer()
    reference = manifest()["fw_jfk"]["reference"]
    assert jiwer.wer(normalise(reference), normalise(completed["transcript"])) <= 0.15


def test_keys_by_header_or_subprotocol_and_refusal_without(api_factory: Any) -> None:
    keys = [ApiKey(name="alice", sha256=hashlib.sha256(b"wq_alice").hexdigest())]
    api = api_factory(api_keys=keys, require_api_key=True)
    with connect(socket_url(api)) as ws:
        events, code = _closed_with(ws)
    assert code == 4401 and events[-1]["error"]["code"] == "invalid_api_key"
    with connect(socket_url(api), additional_headers={"Authorization": "Bearer wrong"}) as ws:
        assert _closed_with(ws)[1] == 4401
    _open(api, additional_headers={"Authorization": "Bearer wq_alice"}).close()
    # Browsers cannot set headers: OpenAI's subprotocol, or whisperq's.
    with _open(api, subprotocols=["realtime", "openai-insecure-api-key.wq_alice"]) as ws:
        assert ws.subprotocol == "realtime"
    with _open(api, subprotocols=["whisperq.bearer.wq_alice"]) as ws:
        assert ws.subprotocol == "whisperq.bearer.wq_alice"


def test_a_key_holds_at_most_its_sessions(api_factory: Any) -> None:
    api = api_factory(max_live_sessions_per_key=1)
    first = _open(api)
    with connect(socket_url(api)) as second:
        events, code = _closed_with(second)
    assert code == 4429 and events[-1]["error"]["code"] == "session_limit"
    first.close()
    wait_for(lambda: _opens(api), 10)


def _opens(api: Any) -> bool:
    with connect(socket_url(api)) as ws:
        return bool(json.loads(ws.recv(timeout=10))["type"] == "session.created")


def test_audio_faster_than_real_time_past_the_allowance_closes_the_session(api_factory: Any) -> None:
    api = api_factory(live_max_ahead_s=2)
    with _open(api) as ws:
        ws.send(append_event(silence(5)))
        events, code = _closed_with(ws)
    assert code == 4429 and events[-1]["error"]["code"] == "audio_too_fast"


def test_idle_and_overlong_sessions_are_closed(api_factory: Any) -> None:
    with _open(api_factory(live_idle_timeout_s=0.5)) as ws:
        events, code = _closed_with(ws)
    assert code == 4408 and events[-1]["error"]["code"] == "idle_timeout"
    with _open(api_factory(live_max_session_s=1)) as ws:
        ws.send('{"type": "input_audio_buffer.clear"}')
        events, code = _closed_with(ws)
    assert code == 4408 and events[-1]["error"]["code"] == "session_expired"


def test_without_a_live_worker_the_session_is_refused_at_once(api_factory: Any) -> None:
    with _open(api_factory()) as ws:
        ws.send(append_event(silence(0.5)))
        events, code = _closed_with(ws, 10)
    assert code == 4503 and events[-1]["error"]["code"] == "no_live_worker"


def test_a_client_that_vanishes_frees_its_worker_slot_within_seconds(
    api_factory: Any, live_worker: Any, redis: Redis
) -> None:
    api = api_factory(live_model="tiny.en")
    live_worker(live_slots=1)
    gone = _open(api)
    session_id = _speaking(gone)
    # The client's machine drops off the network: no close frame, the TCP connection simply ends.
    gone.socket.shutdown(socket.SHUT_RDWR)
    gone.socket.close()
    vanished = time.monotonic()
    with _open(api) as ws:
        _speaking(ws)
    assert time.monotonic() - vanished < 10
    wait_for(lambda: not list(redis.scan_iter(f"whisperq:live:{session_id}:*")), 30)


def _speaking(ws: ClientConnection) -> str:
    """Send speech until the worker says it has started; the session's id."""
    ws.send(_update({"transcription": {"model": "whisper-1", "language": "en"}}))
    session_id = str(receive_until(ws, "session.updated")[-1]["session"]["id"])
    audio = pcm16(JFK)
    ws.send(append_event(audio[: 24000 * 2 * 2]))
    receive_until(ws, "input_audio_buffer.speech_started", timeout_s=30)
    return session_id


def test_open_sessions_audio_seconds_and_final_latency_are_in_metrics(api_factory: Any, live_worker: Any) -> None:
    api = api_factory(live_model="tiny.en")
    live_worker()
    with _open(api) as ws:
        assert "whisperq_live_sessions_open 1.0" in api.get("/metrics").text
        ws.send(_update({"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}))
        receive_until(ws, "session.updated")
        ws.send(append_event(pcm16(JFK, 16000)))
        ws.send('{"type": "input_audio_buffer.commit"}')
        receive_until(ws, "conversation.item.input_audio_transcription.completed")
    text = wait_for(lambda: (text := api.get("/metrics").text) * ("whisperq_live_sessions_open 0.0" in text), 10)
    assert 'whisperq_live_audio_seconds_total{model="tiny.en"} 11.0' in text
    assert 'whisperq_live_final_latency_seconds_count{model="tiny.en"} 1.0' in text


def test_a_worker_drops_a_session_whose_api_replica_died(live_worker: Any, redis: Redis) -> None:
    """No API here: the session is put in Redis as an API does, and its presence is left to lapse, as when the replica
    holding the socket dies."""
    live_worker(live_slots=1)
    session_id = "sess_orphan"
    redis.set(keys.live_presence_key(session_id), 1, ex=live.PRESENCE_TTL_S)
    config = LiveConfig(model="tiny.en").model_dump(mode="json")
    redis.xadd(keys.live_in_key(session_id), live.command_fields(Command.CONFIG, config))
    redis.lpush(keys.live_waiting_key("tiny.en"), session_id)
    ready = wait_for(lambda: redis.xrange(keys.live_out_key(session_id)), 30)
    assert ready[0][1][b"kind"] == Event.READY.encode()
    taken = time.monotonic()
    wait_for(lambda: not redis.exists(keys.live_in_key(session_id)), 30)  # dropped: its input stream deleted
    assert time.monotonic() - taken < live.PRESENCE_TTL_S + 3

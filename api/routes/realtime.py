"""Live transcription over a WebSocket, as OpenAI's Realtime API in its transcription form:
`/v1/realtime?intent=transcription`.

The API holds the socket and never decodes: audio goes to Redis (the session's input stream), a live worker of the
model takes the session, and its events come back through the session's output stream. Any API replica can hold
any session. Errors in a client event are `error` events and the session goes on; the session ends with a close
code for what cannot go on: 4401 a bad key, 4429 too many sessions or audio faster than real time, 4408 idle or
too long, 4503 no live worker, 1012 the worker stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import redis.asyncio as aioredis
from fastapi import APIRouter, WebSocket
from starlette.concurrency import run_in_threadpool
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api import realtime
from api.auth import Caller, identify
from api.limits import Slot, Slots
from api.realtime import ClientError
from shared import fleet, keys, live
from shared.errors import TooManyConcurrent, Unauthorized
from shared.live import Command, Event, LiveConfig
from shared.settings import Settings

router = APIRouter()

KEY_PROTOCOLS = ("whisperq.bearer.", "openai-insecure-api-key.")
READ_BLOCK_MS = 1000


class Close(Exception):
    """End the session: an error event (if any) and then a close with this code."""

    def __init__(self, code: int, event: dict[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.event = event


def _close(code: int, error: str, message: str, kind: str = "invalid_request_error") -> Close:
    return Close(code, realtime.error_event(error, message, kind=kind))


@router.websocket("/v1/realtime")
async def realtime_socket(websocket: WebSocket) -> None:
    """One live transcription session."""
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol=_chosen_protocol(offered))
    state = websocket.app.state
    settings: Settings = state.settings
    slot: Slot | None = None
    try:
        if websocket.query_params.get("intent", "transcription") != "transcription":
            raise _close(4400, "unsupported_intent", "only intent=transcription is served")
        caller = await run_in_threadpool(_caller, websocket, offered, settings)
        slots = Slots(
            state.redis, "live sessions", settings.max_live_sessions_per_key, settings.live_max_session_s + 60
        )
        try:
            slot = await run_in_threadpool(slots.take, caller.name)
        except TooManyConcurrent as exc:
            raise _close(4429, "session_limit", exc.message) from exc
        await Session(websocket, state.live_redis, settings).run()
    except Close as close:
        await _finish(websocket, close)
    finally:
        if slot is not None:
            await run_in_threadpool(slot.release)


def _chosen_protocol(offered: list[str]) -> str | None:
    if "realtime" in offered:
        return "realtime"
    return next((protocol for protocol in offered if protocol.startswith(KEY_PROTOCOLS)), None)


def _caller(websocket: WebSocket, offered: list[str], settings: Settings) -> Caller:
    authorization = websocket.headers.get("authorization")
    for protocol in offered:
        for prefix in KEY_PROTOCOLS:
            if authorization is None and protocol.startswith(prefix):
                authorization = f"Bearer {protocol.removeprefix(prefix)}"
    try:
        return identify(authorization, settings)
    except Unauthorized as exc:
        raise _close(4401, "invalid_api_key", exc.message) from exc


async def _finish(websocket: WebSocket, close: Close) -> None:
    if websocket.application_state != WebSocketState.CONNECTED:
        return
    try:
        if close.event is not None:
            await websocket.send_json(close.event)
        await websocket.close(close.code)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client is gone already


class Session:
    """One socket's session: client events to the worker, worker events to the client, limits kept."""

    def __init__(self, websocket: WebSocket, redis: aioredis.Redis, settings: Settings) -> None:
        self.websocket = websocket
        self.redis = redis
        self.settings = settings
        self.id = f"sess_{uuid.uuid4().hex[:22]}"
        assert settings.live_model is not None
        self.config = LiveConfig(model=settings.live_model)
        self.opened = time.monotonic()
        self.first_audio: float | None = None
        self.audio_s = 0.0
        self.assigned = asyncio.Event()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Serve until the client leaves or a limit closes the session; nothing of it stays in Redis. The session
        counts as open (`/metrics`) before the client is told it exists."""
        tasks: list[asyncio.Task[None]] = []
        await self._renew()
        try:
            await self._send(
                {
                    "type": "session.created",
                    "event_id": realtime.event_id(),
                    "session": realtime.session_object(self.id, self.config),
                }
            )
            tasks = [asyncio.create_task(work()) for work in (self._receive, self._forward, self._keep)]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a Close propagates
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._cleanup()

    # -- client to worker -----------------------------------------------------------------------------------------

    async def _receive(self) -> None:
        while True:
            try:
                message = await asyncio.wait_for(self.websocket.receive(), self.settings.live_idle_timeout_s)
            except asyncio.TimeoutError as exc:  # noqa: UP041 -- not yet the builtin TimeoutError on Python 3.10
                idle = f"nothing received for {self.settings.live_idle_timeout_s:.0f} s"
                raise _close(4408, "idle_timeout", idle) from exc
            if message["type"] == "websocket.disconnect":
                return
            try:
                await self._handle(dict(message))
            except ClientError as exc:
                await self._send(realtime.error_event(exc.code, exc.message, param=exc.param, event_id=exc.event_id))

    async def _handle(self, message: dict[str, Any]) -> None:
        text = message.get("text")
        if text is None:
            raise ClientError("invalid_event", "send JSON text events; binary frames are not taken")
        if len(text) > self.settings.live_max_frame_bytes:
            raise ClientError("frame_too_large", f"events are at most {self.settings.live_max_frame_bytes} bytes")
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ClientError("invalid_json", f"the event is not JSON: {exc}") from exc
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise ClientError("invalid_event", "an event is a JSON object with a type")
        try:
            await self._dispatch(event)
        except ClientError as exc:
            exc.message = f"{exc.message} (in {event['type']})"
            client_id = event.get("event_id")
            exc.event_id = client_id if isinstance(client_id, str) else None  # OpenAI echoes the client's event id
            raise

    async def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "session.update":
            await self._update(event.get("session"))
        elif kind == "input_audio_buffer.append":
            await self._append(realtime.audio_bytes(event))
        elif kind == "input_audio_buffer.commit":
            if not self.assigned.is_set():
                raise ClientError("input_audio_buffer_commit_empty", "the buffer holds no audio")
            await self._command(Command.COMMIT)
        elif kind == "input_audio_buffer.clear":
            if self.assigned.is_set():
                await self._command(Command.CLEAR)
            else:
                await self._send({"type": "input_audio_buffer.cleared", "event_id": realtime.event_id()})
        else:
            raise ClientError("unknown_event", f"unknown event type {kind!r} for a transcription session")

    async def _update(self, session: Any) -> None:
        assert self.settings.live_model is not None
        config = realtime.updated_config(self.config, session, self.settings.live_model)
        if self.assigned.is_set() and config.model != self.config.model:
            raise ClientError("invalid_value", "the model cannot change once audio has come", "session.audio")
        self.config = config
        if self.assigned.is_set():
            await self._command(Command.CONFIG, config.model_dump(mode="json"))
        await self._send(
            {
                "type": "session.updated",
                "event_id": realtime.event_id(),
                "session": realtime.session_object(self.id, self.config),
            }
        )

    async def _append(self, pcm: bytes) -> None:
        now = time.monotonic()
        if self.first_audio is None:
            self.first_audio = now
        self.audio_s += len(pcm) / 2 / self.config.rate
        ahead = self.audio_s - (now - self.first_audio)
        if ahead > self.settings.live_max_ahead_s:
            raise _close(
                4429,
                "audio_too_fast",
                f"audio came {ahead:.0f} s ahead of real time; at most {self.settings.live_max_ahead_s:.0f} s",
            )
        if not self.assigned.is_set():
            await self._assign()
        pipe = self.redis.pipeline(transaction=False)
        self._queue_command(pipe, Command.AUDIO, pcm)
        pipe.hincrbyfloat(
            keys.metrics_counter_key("live_audio_seconds"), self.config.model, len(pcm) / 2 / self.config.rate
        )
        await pipe.execute()

    async def _assign(self) -> None:
        """Hand the session to the live workers of its model (the first audio does)."""
        workers = await run_in_threadpool(fleet.live_workers, self.websocket.app.state.redis)
        if not any(worker.model == self.config.model and worker.live_slots > 0 for worker in workers):
            raise _close(
                4503,
                "no_live_worker",
                f"no worker serves live sessions of {self.config.model} now",
                kind="server_error",
            )
        await self._command(Command.CONFIG, self.config.model_dump(mode="json"))
        await self.redis.lpush(keys.live_waiting_key(self.config.model), self.id)
        self.assigned.set()

    async def _command(self, kind: str, payload: bytes | dict[str, Any] | None = None) -> None:
        pipe = self.redis.pipeline(transaction=False)
        self._queue_command(pipe, kind, payload)
        await pipe.execute()

    def _queue_command(self, pipe: Any, kind: str, payload: bytes | dict[str, Any] | None) -> None:
        key = keys.live_in_key(self.id)
        pipe.xadd(key, live.command_fields(kind, payload))
        pipe.expire(key, live.STREAM_TTL_S)

    # -- worker to client -----------------------------------------------------------------------------------------

    async def _forward(self) -> None:
        await self.assigned.wait()
        deadline = time.monotonic() + self.settings.live_start_timeout_s
        cursor = "0"
        while True:
            found: Any = await self.redis.xread({keys.live_out_key(self.id): cursor}, count=100, block=READ_BLOCK_MS)
            if not self.ready.is_set() and time.monotonic() > deadline:
                raise _close(
                    4503, "no_live_worker", "no live worker took the session in time; try again", kind="server_error"
                )
            for _, entries in found or []:
                for entry_id, fields in entries:
                    cursor = entry_id
                    await self._relay(fields)

    async def _relay(self, fields: dict[bytes, bytes]) -> None:
        kind, data, _, _ = live.decode_entry(fields)
        if kind == Event.READY:
            self.ready.set()
            return
        event = realtime.server_event(kind, data)
        if kind == Event.ERROR and data.get("fatal"):
            raise Close(1012 if data.get("code") == "worker_stopped" else 1011, event)
        if event is not None:
            await self._send(event)

    # -- limits and presence --------------------------------------------------------------------------------------

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(live.PRESENCE_RENEW_S)
            await self._renew()
            if time.monotonic() - self.opened > self.settings.live_max_session_s:
                raise _close(
                    4408,
                    "session_expired",
                    f"a session lasts at most {self.settings.live_max_session_s:.0f} s; open a new one",
                )

    async def _renew(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(keys.live_presence_key(self.id), 1, ex=live.PRESENCE_TTL_S)
        pipe.zadd(keys.live_open_key(), {self.id: (time.time() + live.PRESENCE_TTL_S) * 1000})
        await pipe.execute()

    async def _cleanup(self) -> None:
        """Tell the worker the session ended; drop the presence; let the streams lapse soon."""
        pipe = self.redis.pipeline(transaction=False)
        if self.assigned.is_set():
            self._queue_command(pipe, Command.END, None)
        pipe.delete(keys.live_presence_key(self.id), keys.live_out_key(self.id))
        pipe.zrem(keys.live_open_key(), self.id)
        pipe.expire(keys.live_in_key(self.id), 30)
        pipe.lrem(keys.live_waiting_key(self.config.model), 0, self.id)
        try:
            await pipe.execute()
        except Exception:  # Redis away: the keys lapse on their own
            pass

    async def _send(self, event: dict[str, Any]) -> None:
        await self.websocket.send_json(event)

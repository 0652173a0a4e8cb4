"""The live server: a worker's thread that takes live sessions of its model, up to its slots, and serves them all.

One loop owns every session: it reads their commands from Redis in one call, feeds audio through each session's VAD,
then runs the single most urgent decode (a committed turn's final before any partial, the longest-waiting first)
and loops. Sessions whose client has gone (their presence lapsed) are dropped within seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydantic import ValidationError
from redis import Redis

from shared import keys, metrics
from shared.live import Command, Event, LiveConfig, decode_entry, emit
from worker.engine import Engine
from worker.live_session import PARTIAL, DecodeJob, LiveSession
from worker.streaming import decode

log = logging.getLogger(__name__)

READ_COUNT = 200
IDLE_BLOCK_MS = 200
PRESENCE_CHECK_S = 1.0


class LiveServer:
    """Serves up to `slots` live sessions of the engine's model until `stop` is set."""

    def __init__(self, redis: Redis, engine: Engine, worker_id: str, slots: int, stop: threading.Event) -> None:
        self.redis = redis
        self.engine = engine
        self.worker_id = worker_id
        self.slots = slots
        self.stop = stop
        self.sessions: dict[str, LiveSession] = {}
        self.cursors: dict[str, bytes] = {}
        self.last_decode: dict[str, float] = {}
        self._checked_at = 0.0
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every decode, several a second

    def run(self) -> None:
        """Serve until stopped; sessions still open then get an error that tells their clients to reconnect."""
        log.info("live server %s takes up to %d sessions of %s", self.worker_id, self.slots, self.engine.name)
        try:
            while not self.stop.is_set():
                self._round()
        finally:
            for session_id in list(self.sessions):
                self._send(session_id, Event.ERROR, code="worker_stopped", message="the worker stopped", fatal=True)
                self._end(session_id)

    def start_thread(self) -> threading.Thread:
        """Run in a thread of its own, beside a batch worker's loop."""
        thread = threading.Thread(target=self._run_logged, name="live", daemon=True)
        thread.start()
        return thread

    def _run_logged(self) -> None:
        try:
            self.run()
        except Exception:
            log.exception("the live server stopped")

    def _round(self) -> None:
        try:
            self._take()
            job = self._most_urgent()
            self._read(block_ms=None if job is not None else IDLE_BLOCK_MS)
            self._drop_vanished()
            job = self._most_urgent()
            if job is not None:
                self._decode(job)
        except Exception:  # Redis away: wait a moment and go on with the sessions still held
            log.warning("live server round failed", exc_info=True)
            self.stop.wait(1.0)

    # -- sessions -------------------------------------------------------------------------------------------------

    def _take(self) -> None:
        """Take waiting sessions while slots are free (waiting a little for one when none is held)."""
        while len(self.sessions) < self.slots and not self.stop.is_set():
            waiting = keys.live_waiting_key(self.engine.name)
            found: Any
            if self.sessions:
                found = self.redis.rpop(waiting)
            else:
                popped: Any = self.redis.brpop([waiting], timeout=1)
                found = popped[1] if popped else None
            if found is None:
                return
            self._open(found.decode())

    def _open(self, session_id: str) -> None:
        if not self.redis.exists(keys.live_presence_key(session_id)):
            return  # its client left while it waited
        first: Any = self.redis.xrange(keys.live_in_key(session_id), count=1)
        kind, data, _, _ = decode_entry(first[0][1]) if first else ("", {}, None, 0.0)
        if kind != Command.CONFIG:
            log.warning("live session %s has no settings; dropped", session_id)
            return
        self.sessions[session_id] = LiveSession(session_id, LiveConfig(**data), self._emitter(session_id))
        self.cursors[session_id] = first[0][0]
        self.last_decode[session_id] = 0.0
        self._send(session_id, Event.READY, worker=self.worker_id)
        log.info("live session %s opened", session_id)

    def _end(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        self.cursors.pop(session_id, None)
        self.last_decode.pop(session_id, None)
        self.redis.delete(keys.live_in_key(session_id))
        if session is not None:
            log.info("live session %s ended: %s", session_id, session.summary())

    def _drop_vanished(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < PRESENCE_CHECK_S or not self.sessions:
            return
        self._checked_at = now
        ids = list(self.sessions)
        pipe = self.redis.pipeline(transaction=False)
        for session_id in ids:
            pipe.exists(keys.live_presence_key(session_id))
        for session_id, present in zip(ids, pipe.execute(), strict=True):
            if not present:
                log.info("live session %s: its client is gone", session_id)
                self._end(session_id)

    # -- commands -------------------------------------------------------------------------------------------------

    def _read(self, block_ms: int | None) -> None:
        if not self.sessions:
            return
        streams: Any = {keys.live_in_key(session_id): cursor for session_id, cursor in self.cursors.items()}
        found: Any = self.redis.xread(streams, count=READ_COUNT, block=block_ms)
        for stream, entries in found or []:
            session_id = stream.decode().split(":")[-2]
            for entry_id, fields in entries:
                if session_id not in self.sessions:
                    break
                self.cursors[session_id] = entry_id
                self._command(session_id, fields)

    def _command(self, session_id: str, fields: dict[bytes, bytes]) -> None:
        session = self.sessions[session_id]
        kind, data, pcm, arrived = decode_entry(fields)
        try:
            if kind == Command.AUDIO and pcm is not None:
                session.append(pcm, arrived)
            elif kind == Command.COMMIT:
                session.commit()
            elif kind == Command.CLEAR:
                session.clear()
            elif kind == Command.CONFIG:
                session.configure(LiveConfig(**data))
            elif kind == Command.END:
                self._end(session_id)
        except ValidationError as exc:
            self._send(session_id, Event.ERROR, code="invalid_session", message=str(exc))
        except Exception:
            log.exception("live session %s failed", session_id)
            self._send(session_id, Event.ERROR, code="server_error", message="the session failed", fatal=True)
            self._end(session_id)

    # -- decoding -------------------------------------------------------------------------------------------------

    def _most_urgent(self) -> DecodeJob | None:
        """Finals, then decodes at a pause, then partials; oldest first, partials of the session that waited longest."""
        now = time.time()
        jobs = [job for session in self.sessions.values() if (job := session.wanted(now)) is not None]
        if not jobs:
            return None
        waited = self.last_decode
        return min(jobs, key=lambda job: (job.urgency, job.since if job.urgency < PARTIAL else waited[job.session.id]))

    def _decode(self, job: DecodeJob) -> None:
        session = job.session
        config = session.config
        self.last_decode[session.id] = time.time()
        try:
            text, language = decode(self.engine.model, session.samples(job), config.language, job.prompt, job.beam)
        except Exception as exc:
            log.exception("live decode failed in session %s", session.id)
            self._send(session.id, Event.FAILED, item=job.item, code="decode_failed", message=str(exc))
            session.closing = [turn for turn in session.closing if turn.item != job.item]
            return
        session.decoded(job, text, language)

    # -- events ---------------------------------------------------------------------------------------------------

    def _emitter(self, session_id: str) -> Any:
        def send(kind: str, **data: Any) -> None:
            self._send(session_id, kind, **data)

        return send

    def _send(self, session_id: str, kind: str, **data: Any) -> None:
        # Counted before it is sent: a client told of a final transcript finds it in /metrics.
        if kind == Event.COMPLETED:
            metrics.observe(self.redis, "live_final_latency_seconds", self.engine.name, data["latency_s"])
        emit(self.redis, session_id, kind, **data)

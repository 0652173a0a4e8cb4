"""OpenAI's audio API over the same queues: transcriptions, translations and the model list."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from api.auth import authenticate_async
from api.deps import IdempotencyKey, RedisDep, SettingsDep, StorageDep, TasksDep
from api.errors import TaskFailed
from api.openapi import ERROR_RESPONSES, form_body
from api.service import TaskService
from api.upload import receive_form
from shared import fleet
from shared.enums import Priority, ResponseFormat, TaskStatus, TaskType
from shared.errors import InvalidRequest, TaskTimeout
from shared.formats import diarized_json, render, verbose_json
from shared.languages import to_code
from shared.schemas import Task, TaskCreate, parse
from shared.settings import Settings
from shared.storage import UploadStorage

router = APIRouter(prefix="/v1", tags=["openai"], responses=ERROR_RESPONSES, dependencies=[Depends(authenticate_async)])

OPENAI_MODEL = "whisper-1"
POLL_S = 0.1


class OpenAIForm(BaseModel):
    """The fields of OpenAI's audio requests (besides the file), plus whisperq's `callback_url`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    model: str = Field(description="A served model, or whisper-1 for the default. / 模型名称。", examples=["base"])
    language: str | None = Field(default=None, description="Spoken language code. / 语音语言。", examples=["en"])
    prompt: str | None = Field(default=None, description="Text that primes the model. / 提示文本。", examples=["JFK."])
    temperature: float | None = Field(
        default=None, ge=0, le=1, description="Sampling temperature, 0 to 1. / 采样温度。", examples=[0]
    )
    response_format: str = Field(
        default="json",
        description="json, text, srt, vtt, verbose_json or diarized_json (speaker labels). / 输出格式。",
        examples=["verbose_json"],
    )
    timestamp_granularities: str | None = Field(
        default=None,
        alias="timestamp_granularities[]",
        description="word and/or segment. / 时间戳粒度。",
        examples=["word,segment"],
    )
    callback_url: str | None = Field(
        default=None,
        description="Answer at once; notify here. / 异步回调地址。",
        examples=["https://example.com/hooks/whisperq"],
    )

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is not None and to_code(value) is None:
            raise ValueError(f"unknown language {value!r}; use a Whisper language code such as 'en' or 'es'")
        return value

    @field_validator("response_format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value not in ("json", "text", "srt", "vtt", "verbose_json", "diarized_json"):
            raise ValueError("must be json, text, srt, vtt, verbose_json or diarized_json")
        return value

    @property
    def granularities(self) -> set[str]:
        """The timestamp granularities asked for (segment by default)."""
        chosen = {part.strip() for part in (self.timestamp_granularities or "segment").split(",") if part.strip()}
        if not chosen <= {"word", "segment"}:
            raise InvalidRequest("timestamp_granularities[] takes word and segment")
        return chosen

    def task(self, task_type: TaskType, default_model: str) -> TaskCreate:
        """The task this request stands for: high priority, the same decoding options."""
        options = {
            "language": self.language,
            "initial_prompt": self.prompt,
            "temperature": None if self.temperature is None else [self.temperature],
            "word_timestamps": "word" in self.granularities,
            "diarize": self.response_format == "diarized_json" or None,
        }
        fields = {
            "task_type": task_type,
            "priority": Priority.HIGH,
            "model": default_model if self.model == OPENAI_MODEL else self.model,
            "callback_url": self.callback_url,
            "options": {key: value for key, value in options.items() if value is not None},
        }
        return parse(TaskCreate, {key: value for key, value in fields.items() if value is not None})


async def _wait(tasks: TaskService, task_id: str, timeout_s: float) -> Task:
    deadline = time.monotonic() + timeout_s
    while True:
        task = await run_in_threadpool(tasks.get, task_id)
        if task.status.finished:
            return task
        if time.monotonic() > deadline:
            raise TaskTimeout(f"task {task_id} is still {task.status.value}; fetch it later at /v1/tasks/{task_id}")
        await asyncio.sleep(POLL_S)


def _answer(tasks: TaskService, task: Task, request: OpenAIForm) -> Response:
    if task.status is not TaskStatus.COMPLETED:
        raise TaskFailed(task.error_message or f"the task was {task.status.value}", task.error_code or "cancelled")
    transcript = tasks.stores.tasks.result(task.id)
    assert transcript is not None
    if request.response_format == "json":
        return JSONResponse({"text": transcript.text})
    if request.response_format == "diarized_json":
        return JSONResponse(diarized_json(transcript))
    if request.response_format == "verbose_json":
        body = verbose_json(transcript)
        if "segment" not in request.granularities:
            body.pop("segments")
        if "word" not in request.granularities:
            body.pop("words", None)
        return JSONResponse(body)
    text, media_type = render(transcript, ResponseFormat(request.response_format))
    return Response(text, media_type=media_type)


async def _handle(
    request: Request,
    tasks: TaskService,
    settings: Settings,
    storage: UploadStorage,
    task_type: TaskType,
    idempotency_key: str | None,
) -> Response:
    with await receive_form(request, storage, settings) as form:
        openai_request = parse(OpenAIForm, form.fields)
        create = openai_request.task(task_type, settings.default_model)
        submission = await run_in_threadpool(tasks.submit, create, form.file, idempotency_key)
    replayed = {"Idempotent-Replayed": "true"} if submission.replayed else {}
    if openai_request.callback_url:
        view = await run_in_threadpool(tasks.describe, submission.task.id)
        return JSONResponse(view.model_dump(mode="json"), status_code=202, headers=replayed)
    finished = await _wait(tasks, submission.task.id, settings.openai_timeout_s)
    answer = await run_in_threadpool(_answer, tasks, finished, openai_request)
    answer.headers.update(replayed)
    return answer


_FORM = form_body(OpenAIForm)


@router.post("/audio/transcriptions", openapi_extra=_FORM)
async def transcriptions(
    request: Request,
    tasks: TasksDep,
    settings: SettingsDep,
    storage: StorageDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """OpenAI-compatible transcription, run on the high-priority queue. / 兼容 OpenAI 的转写接口。"""
    return await _handle(request, tasks, settings, storage, TaskType.TRANSCRIBE, idempotency_key)


@router.post("/audio/translations", openapi_extra=_FORM)
async def translations(
    request: Request,
    tasks: TasksDep,
    settings: SettingsDep,
    storage: StorageDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """OpenAI-compatible translation into English. / 兼容 OpenAI 的翻译（译为英文）接口。"""
    return await _handle(request, tasks, settings, storage, TaskType.TRANSLATE, idempotency_key)


@router.get("/models")
def models(redis: RedisDep) -> dict[str, Any]:
    """The models live workers serve, in OpenAI's list shape. / 在线 worker 提供的模型列表。"""
    served = fleet.live_workers(redis)
    data = [
        {
            "id": model,
            "object": "model",
            "created": int(min(w.started_at for w in served if w.model == model).timestamp()),
            "owned_by": "whisperq",
        }
        for model in sorted({w.model for w in served})
    ]
    return {"object": "list", "data": data}

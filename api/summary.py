"""Summaries of transcripts by any OpenAI-compatible chat endpoint the operator configures."""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.limits import Slots
from api.service import TaskService
from shared.clock import utcnow
from shared.enums import TaskStatus
from shared.errors import SummariesUnavailable, SummaryFailed, TaskNotCompleted
from shared.settings import Settings

DEFAULT_PROMPT = "Summarise this transcript in a few sentences, in the language it is written in."


class SummaryCreate(BaseModel):
    """What a client may ask of a summary."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        default=None,
        max_length=4000,
        description="Instructions for the model. / 指令。",
        examples=["List the action items."],
    )


class SummaryPublic(BaseModel):
    """A stored summary."""

    task_id: str
    summary: str
    model: str
    prompt: str
    created_at: datetime


async def summarise(tasks: TaskService, settings: Settings, task_id: str, request: SummaryCreate) -> SummaryPublic:
    """Send the transcript with the prompt to the chat endpoint; store and return its answer.

    The wait for the model holds no thread, and each caller has at most `MAX_SUMMARIES_PER_KEY` of them at once.
    """
    task = await run_in_threadpool(tasks.get, task_id)
    if not settings.llm_base_url or not settings.llm_model:
        raise SummariesUnavailable("no language model is configured (WHISPERQ_LLM_BASE_URL, WHISPERQ_LLM_MODEL)")
    completed = task.status is TaskStatus.COMPLETED
    transcript = await run_in_threadpool(tasks.stores.tasks.result, task_id) if completed else None
    if transcript is None:
        raise TaskNotCompleted(f"task {task_id} is {task.status.value}; it can be summarised once it is completed")
    prompt = request.prompt or DEFAULT_PROMPT
    slots = Slots(tasks.redis, "summaries", settings.max_summaries_per_key, settings.llm_timeout_s + 60)
    slot = await run_in_threadpool(slots.take, tasks.caller.name)
    try:
        text = await _chat(settings, prompt, transcript.text)
    finally:
        await run_in_threadpool(slot.release)
    summary = SummaryPublic(task_id=task_id, summary=text, model=settings.llm_model, prompt=prompt, created_at=utcnow())
    await run_in_threadpool(tasks.stores.summaries.save, task_id, summary.model_dump_json())
    return summary


async def _chat(settings: Settings, prompt: str, text: str) -> str:
    """The model's answer, within LLM_TIMEOUT_S in all."""
    assert settings.llm_base_url and settings.llm_model
    headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
    body = {
        "model": settings.llm_model,
        "messages": [{"role": "system", "content": prompt}, {"role": "user", "content": text}],
    }
    url = settings.llm_base_url.rstrip("/") + "/chat/completions"
    try:
        async with httpx.AsyncClient(timeout=settings.llm_timeout_s) as client:
            response = await asyncio.wait_for(client.post(url, json=body, headers=headers), settings.llm_timeout_s)
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"]).strip()
    except TimeoutError as exc:
        raise SummaryFailed(f"the language model gave no summary within {settings.llm_timeout_s:g} s") from exc
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise SummaryFailed(f"the language model did not give a summary: {type(exc).__name__}: {exc}") from exc

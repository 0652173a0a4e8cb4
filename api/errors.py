"""One place that turns errors into HTTP answers: `{"error": {"code", "message", "details"?}}`."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException

from shared.errors import (
    DownloadFailed,
    DownloadTooSlow,
    FileTooLarge,
    Forbidden,
    IdempotencyConflict,
    InvalidRequest,
    MalformedRequest,
    MediaTooLong,
    ModelNotServed,
    ModelUnavailable,
    NoMediaFound,
    ServiceUnavailable,
    StorageFull,
    SummariesUnavailable,
    SummaryFailed,
    TaskFinished,
    TaskNotCompleted,
    TaskNotFound,
    TaskTimeout,
    TooManyTasks,
    Unauthorized,
    UnsafeUrl,
    UnsupportedMedia,
    UploadStalled,
    WhisperqError,
)

log = logging.getLogger(__name__)


class TaskFailed(WhisperqError):
    """A task a client waited on (OpenAI's synchronous answer) ended without a result; carries the task's code."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


# The most specific class listed wins; anything else is a 500.
HTTP_STATUS: dict[type[WhisperqError], int] = {
    MalformedRequest: 400,
    TaskFailed: 400,
    Unauthorized: 401,
    Forbidden: 403,
    TaskNotFound: 404,
    UploadStalled: 408,
    TaskNotCompleted: 409,
    TaskFinished: 409,
    IdempotencyConflict: 409,
    FileTooLarge: 413,
    MediaTooLong: 413,
    UnsupportedMedia: 415,
    InvalidRequest: 422,
    ModelNotServed: 422,
    UnsafeUrl: 422,
    NoMediaFound: 422,
    TooManyTasks: 429,
    DownloadFailed: 502,
    SummaryFailed: 502,
    ModelUnavailable: 503,
    SummariesUnavailable: 503,
    ServiceUnavailable: 503,
    TaskTimeout: 504,
    DownloadTooSlow: 504,
    StorageFull: 507,
}


def http_status(exc: WhisperqError) -> int:
    """The HTTP status an error is answered with."""
    return next((HTTP_STATUS[kind] for kind in type(exc).__mro__ if kind in HTTP_STATUS), 500)


def error_response(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> JSONResponse:
    """The JSON body every error answer has."""
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


async def _whisperq_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, WhisperqError)
    response = error_response(http_status(exc), exc.code, exc.message, exc.details)
    if isinstance(exc, TooManyTasks):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"field": ".".join(str(part) for part in error["loc"][1:]) or str(error["loc"][0]), "message": error["msg"]}
        for error in exc.errors()
    ]
    return error_response(422, "invalid_request", "some fields have invalid values", details)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, code, str(exc.detail))


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    log.warning("redis unavailable: %s", exc)
    return error_response(503, ServiceUnavailable.code, "the task database is unreachable; try again shortly")


# What Redis says of a write it refuses at its `maxmemory`, however redis-py wraps it.
_OUT_OF_MEMORY = "command not allowed when used memory"


async def _redis_refused(request: Request, exc: Exception) -> JSONResponse:
    """Redis out of memory (at its `maxmemory`, with `noeviction`) refuses writes: nothing was recorded."""
    if _OUT_OF_MEMORY not in str(exc):  # in a script's or a transaction's error too, where redis-py cannot tell
        log.error("redis refused a command", exc_info=exc)
        return await _unexpected(request, exc)
    log.error("redis is out of memory; refusing writes: %s", exc)
    return error_response(507, "database_full", "the task database is full; nothing was recorded; try again later")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """Anything else: the same JSON body (the server logs the traceback)."""
    return error_response(500, WhisperqError.code, "the server failed unexpectedly; the error is logged")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on the app."""
    app.add_exception_handler(WhisperqError, _whisperq_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RedisConnectionError, _redis_down)
    app.add_exception_handler(RedisTimeoutError, _redis_down)
    app.add_exception_handler(ResponseError, _redis_refused)
    app.add_exception_handler(Exception, _unexpected)

"""whisperq's errors: each carries a stable machine code, a sentence for humans and an HTTP status."""

from __future__ import annotations

from typing import Any


class WhisperqError(Exception):
    """Base of every error whisperq reports to a client or records on a task."""

    code = "internal_error"
    http_status = 500

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(WhisperqError):
    """A field or option has a value the service cannot accept."""

    code = "invalid_request"
    http_status = 422


class MalformedRequest(InvalidRequest):
    """The request body is not a well-formed multipart form."""

    code = "malformed_request"
    http_status = 400


class ModelNotServed(WhisperqError):
    """No live worker serves the requested model."""

    code = "model_not_served"
    http_status = 422


class FileTooLarge(WhisperqError):
    """The upload is larger than the configured limit."""

    code = "file_too_large"
    http_status = 413


class UnsupportedMedia(WhisperqError):
    """The file is not audio or video the service can decode."""

    code = "unsupported_media"
    http_status = 415


class NoAudioStream(UnsupportedMedia):
    """The media holds no audio stream."""

    code = "no_audio_stream"


class UnsafeUrl(WhisperqError):
    """A URL whose scheme or address the service must not reach (SSRF protection)."""

    code = "unsafe_url"
    http_status = 422


class DownloadFailed(WhisperqError):
    """The media at a URL could not be fetched."""

    code = "download_failed"
    http_status = 502


class NoMediaFound(WhisperqError):
    """A URL points at neither media nor a page holding media."""

    code = "no_media_found"
    http_status = 422


class MediaTooLong(WhisperqError):
    """The media at a URL is longer than the configured limit."""

    code = "media_too_long"
    http_status = 413


class TaskNotFound(WhisperqError):
    """No task has this id."""

    code = "task_not_found"
    http_status = 404


class TaskNotCompleted(WhisperqError):
    """The task has no result yet (or will never have one)."""

    code = "task_not_completed"
    http_status = 409


class TaskFinished(WhisperqError):
    """The task has already finished, so it cannot be cancelled."""

    code = "task_finished"
    http_status = 409


class TaskCancelled(WhisperqError):
    """The task was cancelled or deleted while a worker ran it."""

    code = "task_cancelled"
    http_status = 409


class TaskTimeout(WhisperqError):
    """The task ran past its time limit (a base plus a factor of its audio's duration)."""

    code = "timeout"
    http_status = 504


class TooManyTasks(WhisperqError):
    """The queues (or the caller's share of them) are full; try again later."""

    code = "too_many_tasks"
    http_status = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(TooManyTasks):
    """The caller sent more requests this minute than its key allows."""

    code = "rate_limited"


class SummariesUnavailable(WhisperqError):
    """No language model is configured for summaries."""

    code = "summaries_unavailable"
    http_status = 503


class SummaryFailed(WhisperqError):
    """The configured language model did not answer with a summary."""

    code = "summary_failed"
    http_status = 502


class TaskFailed(WhisperqError):
    """A task a client waited on ended without a result; carries the task's own error code."""

    http_status = 400

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class Forbidden(WhisperqError):
    """The key is valid but may not do this."""

    code = "forbidden"
    http_status = 403


class Unauthorized(WhisperqError):
    """No valid API key was sent where one is needed."""

    code = "unauthorized"
    http_status = 401


class ModelUnavailable(WhisperqError):
    """A worker could not find or download its model."""

    code = "model_unavailable"
    http_status = 503


class ServiceUnavailable(WhisperqError):
    """A backing service (Redis) cannot be reached."""

    code = "service_unavailable"
    http_status = 503

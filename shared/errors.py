"""whisperq's errors: each carries a stable machine code and a sentence for humans.

Two groups. `RequestError`: what the API refuses to do for a request. `TaskFailure`: why a task failed, recorded
on the task by the worker (the API refuses an upload for some of the same causes at once). The HTTP status of
each is the API's business (`api/errors.py`); exceptions a worker uses to unwind a job are in `worker/control.py`.
"""

from __future__ import annotations

from typing import Any


class WhisperqError(Exception):
    """Base of every error whisperq reports to a client or records on a task."""

    code = "internal_error"

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


# What the API refuses to do for a request.


class RequestError(WhisperqError):
    """The request cannot be served as sent."""


class InvalidRequest(RequestError):
    """A field or option has a value the service cannot accept."""

    code = "invalid_request"


class MalformedRequest(InvalidRequest):
    """The request body is not a well-formed multipart form."""

    code = "malformed_request"


class ModelNotServed(RequestError):
    """No live worker serves the requested model."""

    code = "model_not_served"


class TaskNotFound(RequestError):
    """No task has this id."""

    code = "task_not_found"


class TaskNotCompleted(RequestError):
    """The task has no result yet (or will never have one)."""

    code = "task_not_completed"


class TaskFinished(RequestError):
    """The task has already finished, so it cannot be cancelled."""

    code = "task_finished"


class TooManyTasks(RequestError):
    """The queues (or the caller's share of them) are full; try again later."""

    code = "too_many_tasks"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RateLimited(TooManyTasks):
    """The caller sent more requests this minute than its key allows."""

    code = "rate_limited"


class TooManyConcurrent(TooManyTasks):
    """The caller holds as many event streams (or summaries in progress) as its key may at once."""

    code = "too_many_concurrent"


class UploadStalled(RequestError):
    """The client stopped sending its upload."""

    code = "upload_stalled"

    def __init__(self, idle_s: float) -> None:
        super().__init__(f"nothing of the upload arrived for {idle_s:g} s; it was dropped")


class IdempotencyConflict(RequestError):
    """An Idempotency-Key was used before for a different request."""

    code = "idempotency_conflict"


class Unauthorized(RequestError):
    """No valid API key was sent where one is needed."""

    code = "unauthorized"


class Forbidden(RequestError):
    """The key is valid but may not do this."""

    code = "forbidden"


class SummariesUnavailable(RequestError):
    """No language model is configured for summaries."""

    code = "summaries_unavailable"


class SummaryFailed(RequestError):
    """The configured language model did not answer with a summary."""

    code = "summary_failed"


class ServiceUnavailable(RequestError):
    """A backing service (Redis) cannot be reached."""

    code = "service_unavailable"


# Why a task failed.


class TaskFailure(WhisperqError):
    """A cause of failure, recorded on the task."""


class FileTooLarge(TaskFailure):
    """The upload or download is larger than the configured limit."""

    code = "file_too_large"


class UnsupportedMedia(TaskFailure):
    """The file is not audio or video the service can decode."""

    code = "unsupported_media"


class NoAudioStream(UnsupportedMedia):
    """The media holds no audio stream."""

    code = "no_audio_stream"


class StorageFull(TaskFailure):
    """The upload volume has no room for the media, or for the audio a worker cuts from it."""

    code = "storage_full"


class MediaTooLong(TaskFailure):
    """The media is longer than the configured limit (however short its container says it is)."""

    code = "media_too_long"


class UnsafeUrl(TaskFailure):
    """A URL whose scheme or address the service must not reach (SSRF protection)."""

    code = "unsafe_url"


class DownloadFailed(TaskFailure):
    """The media at a URL could not be fetched."""

    code = "download_failed"


class DownloadTooSlow(DownloadFailed):
    """The media at a URL did not arrive within the download deadline."""

    code = "download_too_slow"


class NoMediaFound(TaskFailure):
    """A URL points at neither media nor a page holding media."""

    code = "no_media_found"


class TaskTimeout(TaskFailure):
    """The task ran past its time limit (a base plus a factor of its audio's duration)."""

    code = "timeout"


class ModelUnavailable(TaskFailure):
    """A worker could not find or download its model."""

    code = "model_unavailable"


class SpeakersUnavailable(TaskFailure):
    """The worker cannot label speakers: it was installed without the speaker-embedding packages."""

    code = "speakers_unavailable"

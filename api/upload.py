"""Streaming a multipart form: text fields into memory, the media file straight onto the upload volume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TypeVar
from urllib.parse import parse_qsl

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from shared.errors import FileTooLarge, InvalidRequest, MalformedRequest, UploadStalled
from shared.settings import Settings
from shared.storage import PendingUpload, UploadStorage

T = TypeVar("T")

FILE_FIELD = "file"
MAX_FIELDS = 100
MAX_FIELD_BYTES = 64 * 1024
# All text parts together, array parts included: well above any real task's options.
MAX_TEXT_BYTES = 256 * 1024
# Room for the text fields and part headers on top of the file itself.
FORM_OVERHEAD_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ReceivedFile:
    """A file received onto the upload volume, and what the client said of it."""

    upload: PendingUpload
    filename: str | None
    content_type: str | None


@dataclass
class ReceivedForm:
    """The text fields of a form and, if one was sent, its file; as a context, the file is discarded on error."""

    fields: dict[str, str] = field(default_factory=dict)
    file: ReceivedFile | None = None

    def __enter__(self) -> ReceivedForm:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.file is not None:
            self.file.upload.__exit__(kind, exc, tb)


class _FormReceiver:
    """Callbacks for python-multipart's streaming parser."""

    def __init__(self, storage: UploadStorage, max_bytes: int) -> None:
        self.storage = storage
        self.max_bytes = max_bytes
        self.form = ReceivedForm()
        self.ended = False
        self._headers: dict[str, str] = {}
        self._header_field = b""
        self._header_value = b""
        self._name: str | None = None
        self._value = bytearray()
        self._to_file = False
        self._parts: dict[str, list[str]] = {}
        self._text_parts = 0
        self._text_bytes = 0

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field_data,
            "on_header_value": self._header_value_data,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers, self._name, self._value, self._to_file = {}, None, bytearray(), False

    def _header_field_data(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        # Header bytes pass through latin-1 unchanged; names inside (filename) are decoded as UTF-8 later.
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        name = params.get(b"name")
        if name is None:
            raise MalformedRequest("a form part has no name")
        self._name = name.decode("utf-8", "replace")
        if b"filename" not in params:
            return
        if self._name != FILE_FIELD or self.form.file is not None:
            raise InvalidRequest(f"send exactly one file, in the field {FILE_FIELD!r}")
        self._to_file = True
        self.form.file = ReceivedFile(
            upload=self.storage.receive(self.max_bytes),
            filename=params[b"filename"].decode("utf-8", "replace")[:255],
            content_type=self._headers.get("content-type"),
        )

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._to_file:
            assert self.form.file is not None
            self.form.file.upload.write(data[start:end])
            return
        self._value += data[start:end]
        self._text_bytes += end - start
        if len(self._value) > MAX_FIELD_BYTES:
            raise InvalidRequest(f"the field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")
        if self._text_bytes > MAX_TEXT_BYTES:
            raise InvalidRequest(f"the text fields of a form hold at most {MAX_TEXT_BYTES} bytes together")

    def _part_end(self) -> None:
        if self._to_file or self._name is None:
            return
        self._text_parts += 1
        if self._text_parts > MAX_FIELDS:
            raise InvalidRequest(f"a form has at most {MAX_FIELDS} fields, each part of an array field counted")
        values = self._parts.setdefault(self._name, [])
        if values and not self._name.endswith("[]"):  # only an array field (name[]) may repeat
            raise InvalidRequest(f"the field {self._name!r} is given more than once")
        values.append(self._value.decode("utf-8", "replace"))

    def _end(self) -> None:
        # An array field's parts are joined once, at the end: a, b, ...
        self.form.fields = {name: ",".join(values) for name, values in self._parts.items()}
        self.ended = True


async def within_idle(arrival: Awaitable[T], idle_s: float) -> T:
    """What the client sends next; UploadStalled once it sends nothing for `idle_s` (a client that went away without
    closing its connection would otherwise hold it, and its partial file, for good)."""
    try:
        return await asyncio.wait_for(arrival, idle_s)
    except asyncio.TimeoutError as exc:  # noqa: UP041 -- not yet the builtin TimeoutError on Python 3.10
        raise UploadStalled(idle_s) from exc


async def _arriving(request: Request, idle_s: float) -> AsyncIterator[bytes]:
    """The request's body as it arrives, each chunk within `idle_s` of the last."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            yield await within_idle(chunks.__anext__(), idle_s)
        except StopAsyncIteration:
            return


async def _urlencoded(chunks: AsyncIterator[bytes]) -> ReceivedForm:
    """A form without a file (a task from a URL), sent as application/x-www-form-urlencoded."""
    body = b""
    async for chunk in chunks:
        body += chunk
        if len(body) > FORM_OVERHEAD_BYTES:
            raise InvalidRequest(f"a form without a file is at most {FORM_OVERHEAD_BYTES} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError as exc:
        raise InvalidRequest(f"a form has at most {MAX_FIELDS} fields") from exc
    if len({name for name, _ in pairs}) != len(pairs):
        raise InvalidRequest("a field is given more than once")
    return ReceivedForm(fields=dict(pairs))


def _check_declared_length(request: Request, max_bytes: int) -> None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + FORM_OVERHEAD_BYTES:
        raise FileTooLarge(f"the request is larger than the {max_bytes}-byte upload limit")


async def receive_form(request: Request, storage: UploadStorage, settings: Settings) -> ReceivedForm:
    """Parse the request's form while it arrives; on any error, a stall included, nothing is left on the volume."""
    max_bytes = settings.max_upload_bytes
    _check_declared_length(request, max_bytes)
    body = _arriving(request, settings.upload_idle_s)
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type == b"application/x-www-form-urlencoded":
        return await _urlencoded(body)
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise MalformedRequest("send the task as multipart/form-data (or, without a file, as a urlencoded form)")
    receiver = _FormReceiver(storage, max_bytes)
    parser = MultipartParser(params[b"boundary"], receiver.callbacks())  # type: ignore[arg-type]
    try:
        with receiver.form:
            async for chunk in body:
                # Writes to the volume block, so they run off the event loop.
                await run_in_threadpool(parser.write, chunk)
            parser.finalize()
            if not receiver.ended:
                raise MalformedRequest("the form ended before its closing boundary")
            if receiver.form.file is not None:
                await run_in_threadpool(receiver.form.file.upload.commit)
    except MultipartParseError as exc:
        raise MalformedRequest(f"the multipart body is malformed: {exc}") from exc
    except ClientDisconnect as exc:
        raise MalformedRequest("the client disconnected before the upload was complete") from exc
    return receiver.form

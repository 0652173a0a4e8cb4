"""Audio utilities: extract the sound track of any media as a plain audio file."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from api.auth import authenticate_async
from api.deps import SettingsDep, StorageDep
from api.extract import ExtractOptions, extract
from api.openapi import ERROR_RESPONSES, form_body
from api.upload import FILE_FIELD, receive_form
from shared.errors import InvalidRequest
from shared.schemas import parse
from shared.storage import volume_writes

router = APIRouter(
    prefix="/v1/audio", tags=["audio"], dependencies=[Depends(authenticate_async)], responses=ERROR_RESPONSES
)

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"audio/wav": {}, "audio/flac": {}, "audio/mpeg": {}, "audio/ogg": {}},
        "description": "The extracted audio.",
    }
}


@router.post("/extract", response_class=FileResponse, responses=_RESPONSES, openapi_extra=form_body(ExtractOptions))
async def extract_audio(request: Request, settings: SettingsDep, storage: StorageDep) -> FileResponse:
    """Upload audio or video; get its audio track back, resampled and encoded. / 上传音视频，提取并转码其音轨。"""
    form = await receive_form(request, storage, settings)
    if form.file is None:
        raise InvalidRequest(f"send the media as a file in the form field {FILE_FIELD!r}")
    try:  # the upload is only the input here: it goes whatever happens
        options = parse(ExtractOptions, form.fields)
        encoding = options.encoding
        target = storage.scratch_file(f".{encoding.extension}")
        try:
            source = storage.path(form.file.upload.name)
            with volume_writes():
                await run_in_threadpool(extract, source, target, options, settings.max_media_duration_s)
        except BaseException:
            storage.remove_file(target)
            raise
    finally:
        form.file.upload.discard()
    filename = f"{PurePath(form.file.filename or 'audio').stem}.{encoding.extension}"
    return FileResponse(
        target,
        media_type=encoding.media_type,
        filename=filename,
        background=BackgroundTask(storage.remove_file, target),
    )

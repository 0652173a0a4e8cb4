"""Request bodies for the OpenAPI document where the app parses the body itself (to stream uploads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from api.upload import FILE_FIELD

FILE_DESCRIPTION = (
    "The media: any audio or video FFmpeg reads, up to the upload limit. / 媒体文件：FFmpeg 可读取的任意音频或视频。"
)


class ErrorDetail(BaseModel):
    """What went wrong, for machines (code) and people (message)."""

    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(BaseModel):
    """Every error answer's body."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "Malformed request. / 请求格式错误。",
        401: "Missing or invalid API key. / 缺少或无效的 API 密钥。",
        404: "No such task (or not yours). / 任务不存在。",
        408: "The upload stalled: nothing arrived for WHISPERQ_UPLOAD_IDLE_S. / 上传停滞。",
        409: "Not possible in the task's state. / 任务状态不允许。",
        413: "Upload too large. / 上传文件过大。",
        415: "Not audio or video. / 不是音视频。",
        422: "Invalid field values. / 字段值无效。",
        429: "Too many requests or queued tasks; see Retry-After. / 请求或排队任务过多。",
        503: "The task database is unreachable. / 数据库不可用。",
        507: "The upload volume is full. / 上传存储空间已满。",
    }.items()
}


def _property(field: Any) -> dict[str, Any]:
    default = field.get_default(call_default_factory=True)
    schema: dict[str, Any] = {"type": "string", "description": field.description or ""}
    if default is not None:
        schema["default"] = str(default).lower() if isinstance(default, bool) else str(default)
    if field.examples:
        schema["example"] = str(field.examples[0])
    return schema


def form_body(*models: type[BaseModel], file_required: bool = True) -> dict[str, Any]:
    """`openapi_extra` for a multipart form: the file plus every field of the models, flattened."""
    properties: dict[str, Any] = {FILE_FIELD: {"type": "string", "format": "binary", "description": FILE_DESCRIPTION}}
    for model in models:
        for name, field in model.model_fields.items():
            if (
                not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel))
                or name == "vad_parameters"
            ):
                properties[name] = _property(field)
    schema = {"type": "object", "required": [FILE_FIELD] if file_required else [], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}

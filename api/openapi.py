"""Request bodies for the OpenAPI document where the app parses the body itself (to stream uploads)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from api.upload import FILE_FIELD

FILE_DESCRIPTION = (
    "The media: any audio or video FFmpeg reads, up to the upload limit. / 媒体文件：FFmpeg 可读取的任意音频或视频。"
)


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

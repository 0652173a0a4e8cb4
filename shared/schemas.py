"""Schemas by role: what a client sends, what it gets back, what the engine produces."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.enums import CallbackStatus, Priority, ResponseFormat, TaskStatus, TaskType
from shared.errors import InvalidRequest
from shared.languages import to_code

FormModel = TypeVar("FormModel", bound=BaseModel)
DEFAULT_TEMPERATURES = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
MAX_SPEAKERS = 20
SPEAKER_OPTIONS = {"diarize", "num_speakers", "min_speakers", "max_speakers"}
# Options applied to the decoded text: not faster-whisper's arguments, and not something a batch must share.
AFTER_DECODE_OPTIONS = {"drop_nonspeech", *SPEAKER_OPTIONS}


def _split_numbers(value: Any) -> Any:
    """Accept a list, a JSON array, a single number, or comma-separated numbers."""
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _split_languages(value: Any) -> list[Any]:
    """Accept a list, a JSON array, or comma-separated languages (codes or names)."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else [part for part in text.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise ValueError("must be a language, or a list of languages")
    return value


class VadOptions(BaseModel):
    """Silero VAD parameters (faster-whisper's `VadOptions`)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Speech probability above which audio is speech. / 判定为语音的概率阈值。",
        examples=[0.5],
    )
    neg_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="Probability below which speech ends. / 低于该概率视为语音结束。",
        examples=[0.35],
    )
    min_speech_duration_ms: int = Field(
        default=0,
        ge=0,
        description="Shorter speech is dropped (ms). / 短于此时长的语音被丢弃（毫秒）。",
        examples=[250],
    )
    max_speech_duration_s: float | None = Field(
        default=None,
        gt=0,
        description="Longer speech is split (s); none: no limit. / 超过此时长的语音被切分（秒）。",
        examples=[30],
    )
    min_silence_duration_ms: int = Field(
        default=2000,
        ge=0,
        description="Silence that ends a speech chunk (ms). / 结束语音段所需的静音时长（毫秒）。",
        examples=[500],
    )
    speech_pad_ms: int = Field(
        default=400, ge=0, description="Padding kept around speech (ms). / 语音两侧保留的填充（毫秒）。", examples=[400]
    )


class TranscribeOptions(BaseModel):
    """Whisper decoding options a task may set; defaults are faster-whisper's."""

    model_config = ConfigDict(extra="forbid")

    language: str | list[str] | None = Field(
        default=None,
        description="Spoken language, code or name; or the allowed languages (comma-separated or a JSON array), "
        "detected among them; unset: detected. / 语音语言；或允许的语言列表（逗号分隔或 JSON 数组），在其中检测；"
        "不填则自动检测。",
        examples=["en", "en,es"],
    )
    temperature: list[float] = Field(
        default_factory=lambda: list(DEFAULT_TEMPERATURES),
        min_length=1,
        max_length=20,
        description="Sampling temperature(s), 0 to 1; later ones are fallbacks. / 采样温度（0 到 1），后续值用于回退。",
        examples=["0,0.2,0.4"],
    )
    beam_size: int = Field(
        default=5, ge=1, le=20, description="Beam width for beam search. / 集束搜索宽度。", examples=[5]
    )
    best_of: int = Field(
        default=5,
        ge=1,
        le=20,
        description="Candidates when sampling with temperature. / 温度采样时的候选数。",
        examples=[5],
    )
    patience: float = Field(
        default=1.0, gt=0, le=10, description="Beam search patience factor. / 集束搜索耐心系数。", examples=[1.0]
    )
    compression_ratio_threshold: float | None = Field(
        default=2.4,
        gt=0,
        description="Above this gzip ratio a window is retried hotter. / 压缩比超过该值时以更高温度重试。",
        examples=[2.4],
    )
    log_prob_threshold: float | None = Field(
        default=-1.0,
        le=0,
        description="Below this average log-probability a window is retried. / 平均对数概率低于该值时重试。",
        examples=[-1.0],
    )
    no_speech_threshold: float | None = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Above this no-speech probability a silent window is skipped. / 无语音概率超过该值时跳过该窗口。",
        examples=[0.6],
    )
    condition_on_previous_text: bool = Field(
        default=True,
        description="Feed the previous text as the prompt of the next window. / 以前文作为下一窗口的提示。",
        examples=[True],
    )
    initial_prompt: str | None = Field(
        default=None,
        max_length=4000,
        description="Text that primes vocabulary and style. / 用于引导词汇和风格的提示文本。",
        examples=["Glossary: whisperq, Redis."],
    )
    hotwords: str | None = Field(
        default=None,
        max_length=1000,
        description="Words to favour. / 需要优先识别的热词。",
        examples=["whisperq Kubernetes"],
    )
    word_timestamps: bool = Field(default=False, description="Time every word. / 输出逐词时间戳。", examples=[False])
    prepend_punctuations: str = Field(
        default="\"'“¿([{-",
        max_length=100,
        description="Punctuation merged with the next word. / 与后一个词合并的标点。",
        examples=["\"'“¿([{-"],
    )
    append_punctuations: str = Field(
        default="\"'.。,，!！?？:：”)]}、",
        max_length=100,
        description="Punctuation merged with the previous word. / 与前一个词合并的标点。",
        examples=["\"'.。,，!！?？:：”)]}、"],
    )
    clip_timestamps: list[float] | None = Field(
        default=None,
        max_length=1000,
        description="Start,end,... seconds to transcribe; unset: all. / 需要转写的起止时间（秒），不填则全部。",
        examples=["0,30,60,90"],
    )
    hallucination_silence_threshold: float | None = Field(
        default=None,
        gt=0,
        description="Skip silences this long (s) near hallucinations; needs word_timestamps. / 跳过幻觉附近的静音。",
        examples=[2.0],
    )
    vad_filter: bool = Field(
        default=False,
        description="Drop non-speech with Silero VAD first. / 先用 Silero VAD 去除非语音部分。",
        examples=[False],
    )
    vad_parameters: VadOptions | None = Field(
        default=None,
        description="VAD settings as a JSON object; needs vad_filter. / VAD 参数（JSON 对象），需开启 vad_filter。",
        examples=['{"min_silence_duration_ms": 500}'],
    )
    drop_nonspeech: bool = Field(
        default=True,
        description="Drop text Whisper is unsure of where the VAD hears no voice (text made up on music, tones or "
        "silence). / 丢弃 Whisper 没有把握、且 VAD 听不到人声处的文字（在音乐、提示音或静音上编造的文字）。",
        examples=[True],
    )

    diarize: bool = Field(
        default=False,
        description="Label who speaks each segment and word. / 标注每段和每个词的说话人。",
        examples=[True],
    )
    num_speakers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SPEAKERS,
        description="Exact number of speakers; needs diarize. / 说话人数（确定值），需开启 diarize。",
        examples=[2],
    )
    min_speakers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SPEAKERS,
        description="At least this many speakers; needs diarize. / 最少说话人数，需开启 diarize。",
        examples=[2],
    )
    max_speakers: int | None = Field(
        default=None,
        ge=1,
        le=MAX_SPEAKERS,
        description="At most this many speakers; needs diarize. / 最多说话人数，需开启 diarize。",
        examples=[4],
    )

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, value: Any) -> Any:
        """One language as its code; two or more as their codes, sorted, each once."""
        if value is None:
            return None
        try:
            entries = _split_languages(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a language list: {exc.msg}") from exc
        unknown = [entry.strip() for entry in entries if to_code(entry) is None]
        if unknown:
            named = f"language {unknown[0]!r}" if len(unknown) == 1 else f"languages {', '.join(map(repr, unknown))}"
            raise ValueError(f"unknown {named}; use a Whisper language code such as 'en' or 'es'")
        codes = sorted({cast(str, to_code(entry)) for entry in entries})
        if not codes:
            raise ValueError("give a language, or several separated by commas")
        return codes[0] if len(codes) == 1 else codes

    @property
    def allowed_languages(self) -> list[str] | None:
        """The languages detection picks among, when the task allows several."""
        return self.language if isinstance(self.language, list) else None

    @property
    def single_language(self) -> str | None:
        """The one language the task is decoded in, when it names one (None when it is detected)."""
        return self.language if isinstance(self.language, str) else None

    @field_validator("temperature", "clip_timestamps", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        try:
            return _split_numbers(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a number list: {exc.msg}") from exc

    @field_validator("temperature")
    @classmethod
    def _temperature_range(cls, value: list[float]) -> list[float]:
        if any(not 0 <= t <= 1 for t in value):
            raise ValueError("every temperature must be between 0 and 1")
        return value

    @field_validator("clip_timestamps")
    @classmethod
    def _clips_increase(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (any(t < 0 for t in value) or value != sorted(set(value))):
            raise ValueError("clip timestamps must be non-negative seconds in increasing order")
        return value

    @field_validator("vad_parameters", mode="before")
    @classmethod
    def _vad_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON object: {exc.msg}") from exc
        return value

    @model_validator(mode="after")
    def _coherent(self) -> TranscribeOptions:
        if self.hallucination_silence_threshold is not None and not self.word_timestamps:
            raise ValueError("hallucination_silence_threshold needs word_timestamps=true")
        if self.vad_parameters is not None and not self.vad_filter:
            raise ValueError("vad_parameters needs vad_filter=true")
        self._speaker_counts_coherent()
        return self

    def _speaker_counts_coherent(self) -> None:
        counts = {
            "num_speakers": self.num_speakers,
            "min_speakers": self.min_speakers,
            "max_speakers": self.max_speakers,
        }
        given = [name for name, value in counts.items() if value is not None]
        if given and not self.diarize:
            raise ValueError(f"{', '.join(given)} needs diarize=true")
        if self.num_speakers is not None and (self.min_speakers is not None or self.max_speakers is not None):
            raise ValueError("give num_speakers, or min_speakers and max_speakers, not both")
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers is more than max_speakers")


class TaskCreate(BaseModel):
    """What a client sends to create a task (the form fields besides the file)."""

    model_config = ConfigDict(extra="forbid")

    task_type: TaskType = Field(
        default=TaskType.TRANSCRIBE,
        description="transcribe, or translate into English. / 转写，或翻译成英文。",
        examples=["transcribe"],
    )
    priority: Priority = Field(
        default=Priority.NORMAL,
        description="Queue priority: high, normal or low. / 队列优先级：high、normal 或 low。",
        examples=["high"],
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Model to use; unset: the default model. / 使用的模型，不填则用默认模型。",
        examples=["base"],
    )
    url: str | None = Field(
        default=None,
        max_length=2048,
        description="Media or page URL to fetch instead of a file. / 代替上传文件的媒体或网页链接。",
        examples=["https://example.com/talk.mp3"],
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description="URL to notify when the task ends. / 任务结束时通知的地址。",
        examples=["https://example.com/hooks/whisperq"],
    )
    options: TranscribeOptions = Field(default_factory=TranscribeOptions)

    @field_validator("callback_url", "url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in {"http", "https"} or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
        return value

    @classmethod
    def from_form(cls, fields: Mapping[str, str]) -> TaskCreate:
        """Validate flat form fields; every field that is not a task field is a decoding option."""
        given = {key: value for key, value in fields.items() if value != ""}
        top = {key: given.pop(key) for key in list(given) if key in cls.model_fields and key != "options"}
        errors: list[dict[str, Any]] = []
        options = _validated(TranscribeOptions, given, errors)
        task = _validated(cls, top, errors)
        if errors or task is None or options is None:
            raise InvalidRequest("some fields have invalid values", details=errors)
        return cast(TaskCreate, task.model_copy(update={"options": options}))


def _validated(model: type[BaseModel], data: dict[str, Any], errors: list[dict[str, Any]]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors.extend(error_details(exc))
        return None


def error_details(exc: ValidationError) -> list[dict[str, Any]]:
    """A validation error as `{field, message}` pairs, the way error answers list them."""
    details = []
    for error in exc.errors(include_url=False, include_input=False):
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        details.append({"field": ".".join(str(part) for part in error["loc"]) or "form", "message": message})
    return details


def parse(model: type[FormModel], fields: Mapping[str, Any]) -> FormModel:
    """Validate fields (empty ones left out) into a model; InvalidRequest naming each bad field."""
    try:
        return model.model_validate({key: value for key, value in fields.items() if value != ""})
    except ValidationError as exc:
        raise InvalidRequest("some fields have invalid values", details=error_details(exc)) from exc


def check_model_fits(model: str, multilingual: bool, task_type: TaskType, language: str | list[str] | None) -> None:
    """InvalidRequest for what an English-only model cannot do: translate, or read another language (a list of
    languages always names another: one of English alone is the single language `en`)."""
    if not multilingual and (task_type is TaskType.TRANSLATE or language not in (None, "en")):
        raise InvalidRequest(
            f"model {model!r} is English-only: it can neither translate nor read other languages; "
            "choose a multilingual model"
        )


class Word(BaseModel):
    """One word with its timing."""

    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = Field(default=None, description="Who spoke it, when the task asked for speaker labels.")


class Segment(BaseModel):
    """One decoded segment, as faster-whisper yields it."""

    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float | None = None
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] | None = None
    speaker: str | None = Field(default=None, description="Who spoke it, when the task asked for speaker labels.")


class Chunk(BaseModel):
    """One piece of a long file, cut at silences: seconds on the original timeline.

    `pieces`, where set, are the stretches of [start, end] its audio is made of, joined in order (the middles of
    long pauses left out); without them its audio is the whole of [start, end].
    """

    index: int = Field(ge=0)
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    pieces: list[tuple[float, float]] | None = None

    @property
    def duration(self) -> float:
        """Seconds of the original timeline the chunk spans."""
        return self.end - self.start

    @property
    def spans(self) -> list[tuple[float, float]]:
        """The stretches of the original timeline its audio is made of."""
        return self.pieces or [(self.start, self.end)]

    def place(self, t: float) -> float:
        """A time in the chunk's audio (seconds from its start) on the original timeline, within the chunk."""
        left = max(0.0, t)
        for start, end in self.spans:
            if left <= end - start:
                return start + left
            left -= end - start
        return self.end


class SpeakerSummary(BaseModel):
    """One speaker of a diarized transcript."""

    speaker: str = Field(description="SPEAKER_00, SPEAKER_01... in order of first appearance.")
    seconds: float = Field(description="Total speaking time.")
    turns: int = Field(description="Stretches of speech without another speaker between them.")


class Transcript(BaseModel):
    """The engine's whole output for one task."""

    task: TaskType
    language: str
    language_probability: float
    duration: float
    text: str
    segments: list[Segment]
    speakers: list[SpeakerSummary] | None = Field(
        default=None, description="Who speaks and for how long, when the task asked for speaker labels."
    )


@dataclass(frozen=True)
class RenderedTranscript:
    """A transcript already written as its JSON (a long file's, stitched a chunk at a time, is never all in memory
    as objects), with the one figure read off it."""

    json: str
    duration: float


class Source(BaseModel):
    """Where a task's media came from: an upload, or a URL fetched by the worker."""

    kind: Literal["upload", "url"] = "upload"
    url: str | None = Field(default=None, description="The URL the media was fetched from.")
    platform: str | None = Field(default=None, description="yt-dlp's extractor for a page URL; 'direct' for a file.")
    title: str | None = Field(default=None, description="The media's title, from the page or the file name.")
    filename: str | None = None
    content_type: str | None = None
    format: str | None = None
    size_bytes: int | None = None

    @field_validator("title", "filename")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return printable(value) if value is not None else None


def printable(text: str) -> str:
    """A name fit to show: control, format and unassigned characters (NUL, newlines, bidi overrides) become `_`."""
    return "".join("_" if unicodedata.category(char).startswith("C") else char for char in text)


class Task(BaseModel):
    """A task as stored: one Redis hash."""

    id: str
    status: TaskStatus
    task_type: TaskType
    priority: Priority
    model: str
    options: TranscribeOptions
    source: Source
    callback_url: str | None = None
    callback_status: CallbackStatus | None = None
    callback_attempts: int = 0
    owner: str = "anonymous"
    upload_name: str | None = Field(default=None, description="Server-chosen name on the upload volume; not shown.")
    progress: float = 0.0
    created_at: datetime
    downloading_at: datetime | None = None
    processing_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    cancelled_at: datetime | None = None
    processing_seconds: float | None = None
    real_time_factor: float | None = None
    stage: Literal["diarizing"] | None = Field(default=None, description="Set when a task moves past transcribing.")
    diarization_seconds: float | None = None
    language: str | None = None
    language_probability: float | None = None
    duration: float | None = None
    attempts: int = 0
    worker: str | None = None
    run: int | None = Field(default=None, description="Token of the run holding the task (its attempt); not shown.")
    chunks: int | None = None
    chunk_spans: list[tuple[float, float]] | None = None
    error_code: str | None = None
    error_message: str | None = None


class Delivery(BaseModel):
    """One attempt to deliver a task's callback."""

    at: datetime
    event: str
    status_code: int | None = Field(description="The receiver's HTTP status; null when none was received.")
    error: str | None = None
    duration_ms: int


class CallbackInfo(BaseModel):
    """Where a task's completion notice goes and how its delivery went."""

    url: str
    status: CallbackStatus | None = Field(description="pending, delivered or failed; null until the task ends.")
    deliveries: list[Delivery]


class ErrorInfo(BaseModel):
    """Why a task failed, for machines (code) and people (message)."""

    code: str
    message: str


class TaskPublic(BaseModel):
    """What a client gets back for a task."""

    id: str
    status: TaskStatus
    task_type: TaskType
    priority: Priority
    model: str
    options: TranscribeOptions
    source: Source
    callback_url: str | None
    owner: str = Field(description="The API key's name that created the task, or anonymous.")
    callback: CallbackInfo | None = Field(description="The callback and its deliveries; in listings, without them.")
    progress: float = Field(description="Share of the audio transcribed, 0 to 1.")
    queue_position: int | None = Field(description="While queued: 1 means next on its queue.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    processing_seconds: float | None
    real_time_factor: float | None = Field(description="Processing seconds per second of audio.")
    stage: Literal["transcribing", "diarizing"] | None = Field(
        description="While processing: transcribing, then diarizing when the task asked for speaker labels."
    )
    diarization_seconds: float | None = Field(description="Seconds spent labelling speakers, when asked for.")
    language: str | None
    language_probability: float | None
    duration: float | None = Field(description="Audio duration in seconds.")
    attempts: int
    worker: str | None
    chunks: int | None = Field(
        description="Pieces a long file was cut into at silences; null when not split, and while the split goes on."
    )
    chunks_done: int | None = Field(description="Pieces transcribed so far, for a split task.")
    chunk_spans: list[tuple[float, float]] | None = Field(
        description="Where a split file was cut: start and end seconds of each piece."
    )
    error: ErrorInfo | None
    result: Transcript | None
    result_formats: list[ResponseFormat] | None = Field(description="Formats the result can be fetched in.")

    @classmethod
    def build(
        cls,
        task: Task,
        queue_position: int | None,
        result: Transcript | None,
        deliveries: list[Delivery] | None = None,
        chunks_done: int | None = None,
    ) -> TaskPublic:
        """The public view of a stored task."""
        finished = task.completed_at or task.failed_at or task.cancelled_at
        error = ErrorInfo(code=task.error_code, message=task.error_message or "") if task.error_code else None
        callback = None
        if task.callback_url:
            callback = CallbackInfo(url=task.callback_url, status=task.callback_status, deliveries=deliveries or [])
        return cls(
            **task.model_dump(include=_SHARED_FIELDS),
            callback=callback,
            queue_position=queue_position,
            chunks_done=chunks_done,
            started_at=task.processing_at,
            finished_at=finished,
            stage=(task.stage or "transcribing") if task.status is TaskStatus.PROCESSING else None,
            error=error,
            result=result,
            result_formats=list(ResponseFormat) if result else None,
        )


_SHARED_FIELDS = (set(Task.model_fields) & set(TaskPublic.model_fields)) - {"stage"}


class TaskQuery(BaseModel):
    """Filters and paging for listing tasks."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus | None = Field(
        default=None, description="Only tasks in this status. / 按状态筛选。", examples=["completed"]
    )
    priority: Priority | None = Field(
        default=None, description="Only tasks of this priority. / 按优先级筛选。", examples=["high"]
    )
    task_type: TaskType | None = Field(
        default=None, description="Only this task type. / 按任务类型筛选。", examples=["transcribe"]
    )
    model: str | None = Field(default=None, description="Only tasks for this model. / 按模型筛选。", examples=["base"])
    language: str | None = Field(
        default=None, description="Only this language, requested or detected. / 按语言筛选。", examples=["en"]
    )
    created_after: datetime | None = Field(
        default=None, description="Created after this time. / 创建时间晚于此时。", examples=["2026-11-01T00:00:00Z"]
    )
    created_before: datetime | None = Field(
        default=None, description="Created before this time. / 创建时间早于此时。", examples=["2026-12-01T00:00:00Z"]
    )
    limit: int = Field(
        default=20, ge=1, le=100, description="Tasks per page, 1 to 100. / 每页任务数（1 到 100）。", examples=[20]
    )
    offset: int = Field(
        default=0,
        ge=0,
        le=1_000_000_000,
        description="Tasks to skip, newest first. / 跳过的任务数（按最新排序）。",
        examples=[0],
    )

    @field_validator("language")
    @classmethod
    def _language(cls, value: str | None) -> str | None:
        if value is not None and to_code(value) is None:
            raise ValueError(f"unknown language {value!r}")
        return to_code(value) if value is not None else None

    @field_validator("created_after", "created_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("give a time zone, e.g. 2026-01-31T12:00:00Z")
        return value

    @property
    def filters(self) -> dict[str, str]:
        """The indexed fields this query filters on."""
        values = self.model_dump(mode="json", include={"status", "priority", "task_type", "model", "language"})
        return {field: value for field, value in values.items() if value is not None}


class TaskPage(BaseModel):
    """One page of a task listing."""

    tasks: list[TaskPublic] = Field(description="Newest first; results and queue positions are left out.")
    total: int = Field(description="Tasks matching the filters, on every page.")
    limit: int
    offset: int
    next: str | None = Field(description="URL of the next page, or null on the last.")


class WorkerInfo(BaseModel):
    """What a live worker announces about itself."""

    id: str
    model: str
    device: str
    compute_type: str
    multilingual: bool = Field(description="False for an English-only model, by the model's own flag.")
    gpu: str | None = None
    host: str
    pid: int
    started_at: datetime
    role: Literal["batch", "live", "both"] = Field(default="batch", description="Queued tasks, live sessions, or both.")
    live_slots: int = Field(default=0, description="Live sessions it serves at once (0 for a batch worker).")
    batch: int = Field(default=1, description="Windows of long files it decodes at once.")

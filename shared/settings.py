"""The one settings object: every value whisperq reads from the environment."""

from __future__ import annotations

import base64
import binascii
import json
import socket
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://localhost:6379/0"


def _check_webhook_secret(value: str | None) -> str | None:
    """A Standard Webhooks secret: `whsec_` then base64 (padded or not) of at least 12 bytes."""
    if value is None:
        return None
    encoded = value.removeprefix("whsec_")
    try:
        secret = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        secret = b""
    if encoded == value or len(secret) < 12:
        raise ValueError("must be whsec_ followed by base64 of at least 12 bytes (whisperq new-key makes one)")
    return value


# The owner of tasks sent without a key; no key may take its name.
ANONYMOUS = "anonymous"


class ApiKey(BaseModel):
    """One API key, configured by the SHA-256 of the key (`whisperq new-key` prints it), never the key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.@-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    admin: bool = False
    webhook_secret: str | None = None
    requests_per_minute: int | None = Field(default=None, ge=1)
    max_queued: int | None = Field(default=None, ge=1)

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str | None) -> str | None:
        return _check_webhook_secret(value)

    @field_validator("name")
    @classmethod
    def _not_anonymous(cls, value: str) -> str:
        if value.lower() == ANONYMOUS:
            raise ValueError(f"the name {ANONYMOUS!r} is reserved for callers without a key")
        return value


class Settings(BaseSettings):
    """whisperq settings, read from `WHISPERQ_*` variables and `.env`."""

    model_config = SettingsConfigDict(env_prefix="WHISPERQ_", env_file=".env", env_ignore_empty=True, extra="ignore")

    redis_url: str | None = Field(
        default=None,
        description="Redis to use. Unset: `whisperq up` starts an embedded one; api and worker use localhost:6379.",
    )
    data_dir: Path = Field(default=Path("whisperq-data"), description="Root for the embedded Redis, uploads, models.")
    upload_dir: Path | None = Field(default=None, description="Shared upload volume. Default: DATA_DIR/uploads.")
    model_cache_dir: Path | None = Field(default=None, description="Model cache. Default: DATA_DIR/models.")
    keep_uploads: bool = Field(default=False, description="Keep uploaded media after its task ends.")
    max_upload_bytes: int = Field(
        default=1024**3, gt=0, description="Largest accepted upload, enforced while streaming."
    )
    upload_idle_s: float = Field(
        default=60.0,
        gt=0,
        description="An upload (an HTTP form or the upload socket) that sends nothing for this long is dropped "
        "(408, upload_stalled) and its partial file removed.",
    )
    volume_reserve_bytes: int = Field(
        default=512 * 1024**2,
        ge=0,
        description="Free space the upload volume keeps for the audio workers cut from long files: uploads and "
        "downloads are refused (507, storage_full) while it has less. 0: no reserve.",
    )

    default_model: str = Field(default="base", min_length=1, description="Model used when a task names none.")
    served_models: list[str] = Field(
        default_factory=list,
        description='Models the deployment serves, as JSON (["base", "small"]): tasks for them are accepted even '
        "while no worker is live. DEFAULT_MODEL always is.",
    )
    model: str | None = Field(default=None, description="Model a worker serves. Default: DEFAULT_MODEL.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="Where a worker runs its model.")
    compute_type: str = Field(default="auto", description="CTranslate2 compute type: auto, int8, float16, ...")
    gpu_ids: str | None = Field(
        default=None, pattern=r"^\d+(,\d+)*$", description="GPU ids workers share out, e.g. 0,1,2,3. Unset: all."
    )
    gpu_pool: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="Names the set of GPUs workers share (default: the host name).",
    )
    heartbeat_file: Path | None = Field(
        default=None, description="A file a live worker touches every few seconds, for container health checks."
    )
    cpu_threads: int = Field(
        default=0,
        ge=0,
        description="CPU threads per copy of a worker's model; 0: the cores it may use, shared among the copies that "
        "decode at once (`replicas`), at most 4 each.",
    )
    batch_size: int = Field(
        default=0,
        ge=0,
        le=256,
        description="Decode this many 30-s windows at once (BatchedInferencePipeline, for GPUs); 0: one at a time.",
    )
    batch_windows: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Windows of long files a worker decodes at once, taken from any tasks waiting at the priority "
        "in hand; 0: 8 on a GPU, 1 on CPU (where batching measured slower).",
    )
    priority_lane: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="A second copy of the model that runs high-priority tasks at once while the worker decodes "
        "lower ones, which then get the cores left over; auto: on for CPU batch workers (see README, Priority lane).",
    )
    replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="Copies of the model a batch worker decodes queued jobs with at once, each taking its own jobs "
        "and its share of the CPU threads; 0: 2 on a CPU where the worker may use two cores or more, else 1 (on a "
        "GPU, batches of windows fill the device instead; see README, Replicas).",
    )
    split_after_s: float = Field(
        default=300.0, ge=0, description="Audio longer than this is cut at silences into chunks; 0: never split."
    )
    chunk_target_s: float = Field(
        default=28.0,
        ge=5,
        le=30,
        description="Longest a chunk is cut (one Whisper window at most), in a pause near its end: a high-priority "
        "task waits for one batch of chunks at most. Below 30, a window ends in silence, so Whisper closes its "
        "last segment more often instead of leaving it to be decoded again.",
    )
    chunk_pause_s: float = Field(
        default=0.3,
        ge=0,
        le=5,
        description="Longest pause a chunk's audio keeps: the middle of a longer one is left out, so a window holds "
        "more speech and a long file needs fewer; 0: every pause kept whole.",
    )
    allow_download: bool = Field(default=True, description="Let workers download models from the model hub.")

    api_keys: list[ApiKey] = Field(
        default_factory=list, description='API keys as JSON: [{"name": "alice", "sha256": "...", "admin": false}].'
    )
    require_api_key: bool = Field(default=False, description="Refuse requests without a valid API key.")
    protect_metrics: bool = Field(default=False, description="Serve /metrics to admin keys only.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log lines as text or as JSON objects.")
    llm_base_url: str | None = Field(
        default=None, description="OpenAI-compatible chat endpoint for summaries, e.g. http://llm:8000/v1."
    )
    llm_api_key: str | None = Field(default=None, description="Key for the summaries endpoint.")
    llm_model: str | None = Field(default=None, description="Model name sent to the summaries endpoint.")
    llm_timeout_s: float = Field(default=120.0, gt=0, description="Time the summaries endpoint has to answer.")
    max_summaries_per_key: int = Field(
        default=4, ge=1, description="Summaries one key (or all anonymous callers) may have in progress at once."
    )
    max_streams_per_key: int = Field(
        default=20, ge=1, description="Event streams one key (or all anonymous callers) may hold open at once."
    )
    stream_max_s: float = Field(
        default=3600.0, gt=0, description="An event stream ends after this long; clients resume with Last-Event-ID."
    )
    client_api_key: str | None = Field(default=None, description="The key the whisperq command-line client sends.")
    webhook_secret: str | None = Field(
        default=None, description="Signs callbacks of tasks whose key has no secret of its own (whsec_...)."
    )
    public_url: str | None = Field(
        default=None, description="The API's address as clients reach it, for links in callbacks."
    )
    callback_include_result: bool = Field(default=True, description="Put the transcript in callback bodies.")
    callback_max_attempts: int = Field(default=8, ge=1, description="Delivery attempts of one callback.")
    callback_backoff_s: float = Field(
        default=30.0, gt=0, description="First retry delay; it doubles each attempt, with jitter."
    )
    callback_timeout_s: float = Field(
        default=10.0, gt=0, description="Time one delivery may take in all, from connecting to the answer's status."
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description='Hosts or networks that URLs may reach although not public, as JSON: ["media.internal"].',
    )
    max_media_duration_s: int = Field(
        default=4 * 3600,
        gt=0,
        description="Longest media accepted, from any source (and audio extraction); decoding stops there.",
    )
    download_timeout_s: float = Field(default=30.0, gt=0, description="Connect and read timeout for URL downloads.")
    download_deadline_s: float = Field(
        default=1800.0,
        gt=0,
        description="Longest a URL download may take, page and media together; a slower one fails (download_too_slow).",
    )
    openai_timeout_s: float = Field(
        default=600.0, gt=0, description="How long the OpenAI-compatible endpoints wait for a result."
    )
    job_timeout_base_s: float = Field(default=300.0, gt=0, description="Job time limit: this base...")
    job_timeout_factor: float = Field(default=3.0, gt=0, description="...plus this many seconds per second of audio.")
    max_attempts: int = Field(default=3, ge=1, description="Runs of a task whose worker died before it fails.")
    max_queued_tasks: int = Field(default=10_000, ge=1, description="Queued tasks past which new ones get 429.")
    max_queued_per_priority: dict[str, int] = Field(
        default_factory=dict, description='Per-priority queued limits, as JSON: {"low": 1000}.'
    )
    retry_after_s: int = Field(default=30, ge=1, description="Retry-After sent with a 429.")
    task_ttl_s: int = Field(default=7 * 24 * 3600, gt=0, description="How long tasks and results are kept.")
    worker_ttl_s: int = Field(default=30, ge=5, description="A worker not heard from for this long is gone.")

    role: Literal["batch", "live", "both"] = Field(
        default="batch",
        description="What a worker serves: queued tasks (batch), live sessions (live), or both from one model.",
    )
    nice: int = Field(
        default=0,
        ge=0,
        le=19,
        description="CPU niceness a worker takes at start; `whisperq up` gives batch workers 10 beside live workers.",
    )
    live_slots: int = Field(default=4, ge=1, le=64, description="Live sessions one live worker serves at once.")
    live_model: str | None = Field(
        default=None, description="Model of live sessions that name none (or an OpenAI name). Default: DEFAULT_MODEL."
    )
    max_live_sessions_per_key: int = Field(
        default=4, ge=1, description="Live sessions one key (or all anonymous callers) may hold open at once."
    )
    live_idle_timeout_s: float = Field(
        default=60.0, gt=0, description="A live session that receives nothing for this long is closed."
    )
    live_max_session_s: float = Field(default=3600.0, gt=0, description="Longest a live session may stay open.")
    live_max_ahead_s: float = Field(
        default=30.0,
        gt=0,
        description="How far a live client's audio may run ahead of real time before the session is closed.",
    )
    live_max_frame_bytes: int = Field(
        default=4 * 1024**2, gt=0, description="Largest message a live client may send (base64 audio included)."
    )
    live_start_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a live session waits for a worker to take it."
    )

    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8000, ge=1, le=65535, description="Port the API listens on.")
    api_processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes `whisperq api` serves the API in, sharing its port: more than 1 where the API has "
        "cores to itself.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Log level.")

    @property
    def configured_models(self) -> list[str]:
        """The models tasks may name while no worker is live: SERVED_MODELS and the default model."""
        return sorted({*self.served_models, self.default_model})

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str | None) -> str | None:
        return _check_webhook_secret(value)

    @field_validator("max_queued_per_priority")
    @classmethod
    def _priorities(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - {"high", "normal", "low"}
        if unknown or any(limit < 1 for limit in value.values()):
            raise ValueError('give limits of at least 1 for high, normal or low, e.g. {"low": 1000}')
        return value

    @field_validator("api_keys")
    @classmethod
    def _unique_keys(cls, value: list[ApiKey]) -> list[ApiKey]:
        if len({key.name for key in value}) != len(value) or len({key.sha256 for key in value}) != len(value):
            raise ValueError("API key names and hashes must be unique")
        return value

    @field_validator("compute_type")
    @classmethod
    def _compute_type(cls, value: str) -> str:
        allowed = {
            "auto",
            "default",
            "int8",
            "int8_float32",
            "int8_float16",
            "int8_bfloat16",
            "int16",
            "float16",
            "bfloat16",
            "float32",
        }
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(sorted(allowed))}")
        return value

    @model_validator(mode="after")
    def _keys_when_required(self) -> Settings:
        if self.require_api_key and not self.api_keys:
            raise ValueError("require_api_key is on but no api_keys are configured")
        return self

    @model_validator(mode="after")
    def _derived_paths(self) -> Settings:
        if self.upload_dir is None:
            self.upload_dir = self.data_dir / "uploads"
        if self.model_cache_dir is None:
            self.model_cache_dir = self.data_dir / "models"
        if self.model is None:
            self.model = self.default_model
        if self.live_model is None:
            self.live_model = self.default_model
        return self

    @property
    def gpu_id_list(self) -> list[str] | None:
        """The configured GPU ids, if any."""
        return self.gpu_ids.split(",") if self.gpu_ids else None

    def job_timeout(self, audio_s: float) -> float:
        """How long a job on this much audio may run."""
        return self.job_timeout_base_s + self.job_timeout_factor * audio_s

    def as_env(self) -> dict[str, str]:
        """These settings as `WHISPERQ_*` variables, for child processes that must share them."""
        env = {}
        for name, value in self.model_dump(mode="json", exclude_none=True).items():
            text = (
                json.dumps(value)
                if isinstance(value, (dict, list))
                else str(value).lower()
                if isinstance(value, bool)
                else str(value)
            )
            env[f"WHISPERQ_{name.upper()}"] = text
        return env

    @property
    def redis_dsn(self) -> str:
        """The Redis URL to connect to."""
        return self.redis_url or DEFAULT_REDIS_URL

    @property
    def uploads(self) -> Path:
        """The upload directory, resolved."""
        assert self.upload_dir is not None
        return self.upload_dir

    @property
    def models(self) -> Path:
        """The model cache directory, resolved."""
        assert self.model_cache_dir is not None
        return self.model_cache_dir

    @property
    def served_model(self) -> str:
        """The model this process serves as a worker."""
        assert self.model is not None
        return self.model


def env_example() -> str:
    """Every setting as a commented `WHISPERQ_*=default` line: the text of .env.example."""
    lines = [
        "# whisperq settings: every field, with its default. Copy to .env and change what you need;",
        "# an empty value means the default.",
        "",
    ]
    for name, field in Settings.model_fields.items():
        computed = field.default_factory not in (None, list, dict)  # such as the host name: left empty
        default = None if computed else field.get_default(call_default_factory=True)
        if isinstance(default, (dict, list)):
            value = json.dumps(default)
        elif isinstance(default, bool):
            value = str(default).lower()
        else:
            value = "" if default is None else str(default)
        lines += [f"# {field.description}", f"WHISPERQ_{name.upper()}={value}", ""]
    return "\n".join(lines)


@lru_cache
def get_settings() -> Settings:
    """Settings read once from the environment."""
    return Settings()

"""Audio extraction: any audio or video in, one audio stream out, resampled and encoded with PyAV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import MediaTooLong, NoAudioStream, UnsupportedMedia

STANDARD_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


@dataclass(frozen=True)
class _Encoding:
    container: str
    codec: str
    sample_format: str
    media_type: str
    extension: str


def _encoding(output_format: str, bit_depth: int) -> _Encoding:
    if output_format == "wav":
        codec, sample_format = {16: ("pcm_s16le", "s16"), 24: ("pcm_s24le", "s32"), 32: ("pcm_s32le", "s32")}[bit_depth]
        return _Encoding("wav", codec, sample_format, "audio/wav", "wav")
    if output_format == "flac":
        return _Encoding("flac", "flac", "s16" if bit_depth == 16 else "s32", "audio/flac", "flac")
    if output_format == "mp3":
        return _Encoding("mp3", "libmp3lame", "s16p", "audio/mpeg", "mp3")
    return _Encoding("ogg", "libopus", "s16", "audio/ogg", "opus")


class ExtractOptions(BaseModel):
    """How the extracted audio is encoded."""

    model_config = ConfigDict(extra="forbid")

    sample_rate: int = Field(
        default=16000, description="Samples per second, a standard rate. / 采样率（标准值）。", examples=[16000]
    )
    channels: int = Field(
        default=1, ge=1, le=2, description="1 (mono) or 2 (stereo). / 声道数：1 单声道，2 立体声。", examples=[1]
    )
    bit_depth: int | None = Field(
        default=None, description="16, 24 or 32; wav and flac only. / 位深（仅 wav、flac）。", examples=[16]
    )
    output_format: Literal["wav", "flac", "mp3", "opus"] = Field(
        default="wav", description="wav, flac, mp3 or opus. / 输出格式。", examples=["flac"]
    )

    @field_validator("bit_depth")
    @classmethod
    def _depth(cls, value: int | None) -> int | None:
        if value not in (None, 16, 24, 32):
            raise ValueError("bit_depth must be 16, 24 or 32")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> ExtractOptions:
        rates = OPUS_RATES if self.output_format == "opus" else STANDARD_RATES
        if self.sample_rate not in rates:
            raise ValueError(f"sample_rate for {self.output_format} must be one of {', '.join(map(str, rates))}")
        if self.bit_depth is not None and self.output_format in ("mp3", "opus"):
            raise ValueError(f"bit_depth applies to wav and flac, not {self.output_format}")
        return self

    @property
    def encoding(self) -> _Encoding:
        """Container, codec and sample format for these options."""
        return _encoding(self.output_format, self.bit_depth or 16)


def extract(source: Path, target: Path, options: ExtractOptions, max_s: float) -> None:
    """Decode the first audio stream of `source` and write it to `target` as the options say.

    Media longer than `max_s` seconds is refused (MediaTooLong): at once if its container says so, else when the
    output reaches the limit, so a small upload of long compressed silence cannot fill the disk.
    """
    import av

    encoding = options.encoding
    try:
        with av.open(str(source), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise NoAudioStream("the media holds no audio stream")
            stated = container.duration / av.time_base if container.duration else 0.0
            if stated > max_s:
                raise MediaTooLong(f"the media lasts {stated:.0f} s, over the {max_s:.0f}-second limit")
            with av.open(str(target), "w", format=encoding.container) as output:
                _transcode(container, output, options, encoding, round(max_s * options.sample_rate))
    except av.FFmpegError as exc:
        raise UnsupportedMedia(f"the media could not be decoded: {exc}") from exc


def _transcode(container: Any, output: Any, options: ExtractOptions, encoding: _Encoding, max_samples: int) -> None:
    import av

    layout = "mono" if options.channels == 1 else "stereo"
    # FLAC keeps 24-bit samples in 32-bit words; the encoder is told how many bits are real.
    codec_options = {"bits_per_raw_sample": "24"} if encoding.codec == "flac" and options.bit_depth == 24 else {}
    stream = output.add_stream(encoding.codec, rate=options.sample_rate, layout=layout, options=codec_options)
    stream.format = encoding.sample_format
    resampler = av.AudioResampler(format=encoding.sample_format, layout=layout, rate=options.sample_rate)
    written = 0
    for frame in container.decode(audio=0):
        frame.pts = None
        for converted in resampler.resample(frame):
            written += converted.samples
            if written > max_samples:
                raise MediaTooLong(f"the media is longer than the {max_samples / options.sample_rate:.0f}-second limit")
            output.mux(stream.encode(converted))
    for converted in resampler.resample(None):
        output.mux(stream.encode(converted))
    output.mux(stream.encode(None))

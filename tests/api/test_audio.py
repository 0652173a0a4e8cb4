"""POST /v1/audio/extract on the real videos: rate, channels, depth and duration of what comes back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import httpx
import pytest

from shared.settings import Settings
from tests.conftest import DATA
from tests.worker.test_sources import silent_video

VIDEO = DATA / "video"


def audio_facts(path: Path) -> tuple[str, int, int, float]:
    """Codec, rate, channels and duration (s) of a file's first audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio=0))
        return stream.codec_context.name, stream.rate, stream.channels, samples / stream.rate


def extract(api: httpx.Client, path: Path, **fields: str) -> httpx.Response:
    with path.open("rb") as handle:
        return api.post("/v1/audio/extract", files={"file": (path.name, handle)}, data=fields)


@pytest.mark.parametrize(
    ("video", "fields", "media_type", "codec", "rate", "channels"),
    [
        ("bbb_with_jfk_speech.mp4", {}, "audio/wav", "pcm_s16le", 16000, 1),
        (
            "ljspeech_LJ001_first60s.mkv",
            {"output_format": "flac", "sample_rate": "44100", "channels": "2", "bit_depth": "24"},
            "audio/flac",
            "flac",
            44100,
            2,
        ),
        (
            "ljspeech_LJ001_testsrc.webm",
            {"output_format": "mp3", "sample_rate": "22050"},
            "audio/mpeg",
            "mp3float",  # the name of FFmpeg's MP3 decoder
            22050,
            1,
        ),
        (
            "big_buck_bunny_small_nospeech.mp4",
            {"output_format": "opus", "sample_rate": "48000", "channels": "2"},
            "audio/ogg",
            "opus",
            48000,
            2,
        ),
        ("bbb_with_jfk_speech.mp4", {"bit_depth": "32", "sample_rate": "8000"}, "audio/wav", "pcm_s32le", 8000, 1),
    ],
)
def test_extracts_audio_as_asked(
    api: httpx.Client,
    tmp_path: Path,
    settings: Settings,
    video: str,
    fields: dict[str, str],
    media_type: str,
    codec: str,
    rate: int,
    channels: int,
) -> None:
    response = extract(api, VIDEO / video, **fields)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media_type)
    extension = fields.get("output_format", "wav")
    assert f'filename="{Path(video).stem}.{extension}"' in response.headers["content-disposition"]
    out = tmp_path / f"out.{extension}"
    out.write_bytes(response.content)
    _, _, _, source_duration = audio_facts(VIDEO / video)
    got_codec, got_rate, got_channels, duration = audio_facts(out)
    assert (got_codec, got_rate, got_channels) == (codec, rate, channels)
    assert duration == pytest.approx(source_duration, abs=0.1)
    assert list(settings.uploads.iterdir()) == []


def test_24_bit_flac_keeps_24_bits(api: httpx.Client) -> None:
    response = extract(api, VIDEO / "bbb_with_jfk_speech.mp4", output_format="flac", bit_depth="24")
    # STREAMINFO: 20 bits of rate, 3 of channels - 1, 5 of bits per sample - 1, from byte 18.
    packed = int.from_bytes(response.content[18:22], "big")
    assert response.content[:4] == b"fLaC"
    assert (packed >> 12, ((packed >> 9) & 7) + 1, ((packed >> 4) & 31) + 1) == (16000, 1, 24)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"sample_rate": "12345"}, "form"),
        ({"channels": "6"}, "channels"),
        ({"bit_depth": "8"}, "bit_depth"),
        ({"output_format": "aac"}, "output_format"),
        ({"output_format": "opus", "sample_rate": "44100"}, "form"),
        ({"output_format": "mp3", "bit_depth": "24"}, "form"),
        ({"volume": "2"}, "volume"),
    ],
)
def test_invalid_options_are_422(api: httpx.Client, settings: Settings, fields: dict[str, str], field: str) -> None:
    response = extract(api, VIDEO / "bbb_with_jfk_speech.mp4", **fields)
    assert response.status_code == 422
    assert field in [detail["field"] for detail in response.json()["error"]["details"]]
    assert list(settings.uploads.iterdir()) == []


def test_video_without_audio_is_refused(api: httpx.Client, tmp_path: Path, settings: Settings) -> None:
    silent = tmp_path / "silent.mp4"
    silent_video(silent)
    response = extract(api, silent)
    assert response.status_code == 415 and response.json()["error"]["code"] == "no_audio_stream"
    assert list(settings.uploads.iterdir()) == []


def test_not_media_is_refused(api_factory: Callable[..., httpx.Client], tmp_path: Path) -> None:
    api = api_factory()
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio\n" * 100)
    assert extract(api, notes).status_code == 415

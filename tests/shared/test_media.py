"""Recognising media by content: every container in the shared data, and things that are not media."""

from __future__ import annotations

import os
from pathlib import Path

import av
import pytest

from shared.media import SNIFF_BYTES, sniff
from tests.conftest import DATA


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("audio/faster_whisper/jfk.flac", "flac"),
        ("audio/fsdd/0_george_0.wav", "wav"),
        ("audio/asterisk/en/activated.opus", "ogg"),
        ("video/bbb_with_jfk_speech.mp4", "mp4"),
        ("video/ljspeech_LJ001_first60s.mkv", "matroska"),
        ("video/ljspeech_LJ001_testsrc.webm", "matroska"),
    ],
)
def test_real_media_is_recognised(path: str, expected: str) -> None:
    assert sniff((DATA / path).read_bytes()[:SNIFF_BYTES]) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"GIF89a",
        b"%PDF-1.7\n",
        b"Hello, this is text" * 30,
        b'{"json": true}',
        b"RIFF\x00\x00\x00\x00WEBP",
        b"G" * 600,
    ],
)
def test_non_media_is_refused(head: bytes) -> None:
    assert sniff(head) is None


def test_random_bytes_are_refused() -> None:
    refused = sum(sniff(os.urandom(SNIFF_BYTES)) is None for _ in range(200))
    assert refused >= 190  # a random first byte of 0xFF followed by 0xE0+ looks like an MPEG frame: 1 in 2048


@pytest.mark.parametrize(
    ("container", "codec", "expected"),
    [
        ("mpegts", "aac", "mpeg-ts"),
        ("mp3", "libmp3lame", "mp3"),
        ("adts", "aac", "mpeg-audio"),
        ("aiff", "pcm_s16be", "aiff"),
        ("ipod", "aac", "mp4"),
    ],
)
def test_transcoded_speech_is_recognised(tmp_path: Path, container: str, codec: str, expected: str) -> None:
    target = tmp_path / f"jfk.{container}"
    with (
        av.open(str(DATA / "audio" / "faster_whisper" / "jfk.flac")) as source,
        av.open(str(target), "w", format=container) as out,
    ):
        stream = out.add_stream(codec, rate=16000)
        for frame in source.decode(audio=0):
            frame.pts = None
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert sniff(target.read_bytes()[:SNIFF_BYTES]) == expected

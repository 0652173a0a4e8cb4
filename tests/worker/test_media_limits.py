"""Media past WHISPERQ_MAX_MEDIA_DURATION_S: refused from every source, and never decoded past the limit.

A few hundred KB of compressed silence decode to ten minutes of samples here (to days at full size); the tests
lower the limit to a minute.
"""

from __future__ import annotations

import functools
import struct
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest

from shared.errors import MediaTooLong
from shared.settings import Settings
from tests.conftest import submit
from worker import splitting

LIMIT_S = 60
LONG_S = 600


def silence(path: Path, seconds: int, container: str) -> Path:
    """`seconds` of silence as 8 kbit/s MP3 in `container`."""
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream("libmp3lame", rate=8000, layout="mono")
        stream.bit_rate = 8000
        second = np.zeros((1, 8000), dtype=np.int16)
        for index in range(seconds):
            frame = av.AudioFrame.from_ndarray(second, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, index * 8000
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Ten minutes of silence: as an MP3 that says so, and as Matroska whose header claims ten seconds."""
    folder = tmp_path_factory.mktemp("long-media")
    honest = silence(folder / "silence.mp3", LONG_S, "mp3")
    lying = silence(folder / "lying.mkv", LONG_S, "matroska")
    data = bytearray(lying.read_bytes())
    duration = data.index(b"\x44\x89\x88") + 3  # the Segment's Duration element: a float64, in milliseconds
    data[duration : duration + 8] = struct.pack(">d", 10_000.0)
    lying.write_bytes(data)
    with av.open(str(lying)) as container:
        assert container.duration == 10 * av.time_base, "the header lies"
    assert honest.stat().st_size < 1_000_000 and lying.stat().st_size < 1_000_000
    return {"honest": honest, "lying": lying}


@pytest.fixture
def web(media: dict[str, Path]) -> Iterator[str]:
    """The media, served on loopback."""
    handler = functools.partial(QuietFiles, directory=str(media["honest"].parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_decoding_stops_at_the_limit_whatever_the_header_says(media: dict[str, Path]) -> None:
    for path in media.values():
        with pytest.raises(MediaTooLong, match=f"{LIMIT_S}-second limit"):
            splitting.decode(path, LIMIT_S)
    assert len(splitting.decode(media["lying"], LONG_S + 1)) == pytest.approx(LONG_S * splitting.SAMPLE_RATE, rel=0.01)


@pytest.mark.slow
def test_long_media_fails_from_uploads_and_urls(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: Callable[..., subprocess.Popen[str]],
    media: dict[str, Path],
    web: str,
) -> None:
    served("tiny.en")
    api = api_factory(max_media_duration_s=LIMIT_S)
    uploads = [submit(api, path).json()["id"] for path in media.values()]
    urls = [api.post("/v1/tasks", data={"url": f"{web}/{path.name}"}).json()["id"] for path in media.values()]
    assert start_worker(max_media_duration_s=LIMIT_S).wait(timeout=120) == 0
    for task_id in uploads + urls:
        task = api.get(f"/v1/tasks/{task_id}").json()
        assert task["status"] == "failed" and task["error"]["code"] == "media_too_long", task["error"]


def test_extract_refuses_long_media(
    api_factory: Callable[..., httpx.Client], media: dict[str, Path], settings: Settings
) -> None:
    api = api_factory(max_media_duration_s=LIMIT_S)
    for path in media.values():
        with path.open("rb") as handle:
            response = api.post("/v1/audio/extract", files={"file": (path.name, handle)})
        assert response.status_code == 413, response.text[:200]
        assert response.json()["error"]["code"] == "media_too_long"
    assert list(settings.uploads.iterdir()) == [], "neither the upload nor a partial output is left"

"""Media from URLs and media probing: a local web server, the real yt-dlp, a real worker, real media."""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from redis import Redis

from shared.errors import MediaTooLong, NoMediaFound
from shared.settings import Settings
from shared.store import TaskStore
from tests.conftest import DATA, JFK, StartWorker, submit
from worker.download import _check

pytestmark = pytest.mark.slow

RunWorker = Callable[[str], subprocess.CompletedProcess[str]]
PAGE = """<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1>
<video controls width="320"><source src="{src}" type="video/mp4"></video></body></html>"""


class Trickle:
    """What happens to the `/slow/` downloads of a site: one has begun, a client hung up; the test releases them."""

    def __init__(self) -> None:
        self.begun = threading.Event()
        self.hung_up = threading.Event()
        self.released = threading.Event()


class QuietHandler(SimpleHTTPRequestHandler):
    """Serves the site folder; `/slow/NAME` trickles NAME out, a thousandth every 0.15 s, its last bytes on release."""

    def __init__(self, trickle: Trickle, *args: Any, **kwargs: Any) -> None:
        self.trickle = trickle
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if not self.path.startswith("/slow/"):
            return super().do_GET()
        body = (Path(self.directory) / self.path.removeprefix("/slow/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4" if self.path.endswith(".mp4") else "audio/flac")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        step, sent = max(1, len(body) // 1000), 0
        try:
            while sent < len(body) - step and not self.trickle.released.is_set():
                self.wfile.write(body[sent : sent + step])
                sent += step
                self.trickle.begun.set()
                self.trickle.released.wait(0.15)
            self.trickle.released.wait()
            self.wfile.write(body[sent:])
        except (BrokenPipeError, ConnectionResetError):
            self.trickle.hung_up.set()


@contextmanager
def serve(root: Path, trickle: Trickle) -> Iterator[str]:
    """A web server on loopback for the files under root; its URL. Its slow downloads end when it does."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, trickle, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        trickle.released.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def trickle() -> Trickle:
    return Trickle()


@pytest.fixture
def web(tmp_path: Path, trickle: Trickle) -> Iterator[str]:
    """A web server on loopback with media files and pages, copied from the shared data into a temp folder."""
    root = tmp_path / "site"
    root.mkdir()
    shutil.copy(JFK, root / "jfk.flac")
    shutil.copy(DATA / "video" / "bbb_with_jfk_speech.mp4", root / "bbb.mp4")
    (root / "watch.html").write_text(PAGE.format(title="Inaugural address", src="bbb.mp4"))
    (root / "slow.html").write_text(PAGE.format(title="Slow", src="slow/bbb.mp4"))
    (root / "blog.html").write_text("<html><head><title>Blog</title></head><body><p>No media here.</p></body></html>")
    (root / "notes.txt").write_text("Just some notes.\n" * 50)
    (root / "empty.wav").write_bytes(b"")
    with serve(root, trickle) as url:
        yield url


def task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/tasks/{task_id}").json()
    return body


def post_url(api: httpx.Client, url: str) -> str:
    response = api.post("/v1/tasks", data={"url": url})
    assert response.status_code == 202, response.text
    assert response.json()["source"] == {
        "kind": "url",
        "url": url,
        "platform": None,
        "title": None,
        "filename": None,
        "content_type": None,
        "format": None,
        "size_bytes": None,
    }
    return str(response.json()["id"])


def test_urls_are_fetched_by_the_worker(
    api: httpx.Client,
    served: Callable[[str], None],
    run_worker: RunWorker,
    web: str,
    redis: Redis,
    settings: Settings,
) -> None:
    served("tiny.en")
    direct = post_url(api, f"{web}/jfk.flac")
    page = post_url(api, f"{web}/watch.html")
    missing = post_url(api, f"{web}/gone.mp3")
    blog = post_url(api, f"{web}/blog.html")
    notes = post_url(api, f"{web}/notes.txt")
    empty = post_url(api, f"{web}/empty.wav")
    closed = post_url(api, "http://127.0.0.1:9/nothing.wav")
    run_worker("tiny.en")

    fetched = task(api, direct)
    assert fetched["status"] == "completed" and "ask not what your country" in fetched["result"]["text"]
    assert fetched["source"] | {"url": None} == {
        "kind": "url",
        "url": None,
        "platform": "direct",
        "title": "jfk.flac",
        "filename": None,
        "content_type": None,
        "format": "flac",
        "size_bytes": JFK.stat().st_size,
    }
    stored = TaskStore(redis, settings.task_ttl_s).get(direct)
    assert stored.downloading_at and stored.processing_at and stored.downloading_at < stored.processing_at

    video = task(api, page)
    assert video["status"] == "completed", video["error"]
    assert "ask not what your country" in video["result"]["text"]
    assert video["source"]["platform"] == "HTML5MediaEmbed" and video["source"]["title"].startswith("Inaugural")
    assert video["source"]["format"] == "mp4"

    expected = {
        missing: ("download_failed", "404"),
        blog: ("no_media_found", "no audio or video"),
        notes: ("unsupported_media", "serves text/plain, not audio or video"),
        empty: ("unsupported_media", "empty"),
        closed: ("download_failed", "ConnectError"),
    }
    for task_id, (code, words) in expected.items():
        failed = task(api, task_id)
        assert failed["status"] == "failed", failed
        assert failed["error"]["code"] == code and words in failed["error"]["message"], failed["error"]
    assert list(settings.uploads.iterdir()) == [], "no downloads or scratch folders are left"


def test_downloads_obey_the_size_limit(
    api: httpx.Client, served: Callable[[str], None], run_worker: RunWorker, web: str, settings: Settings
) -> None:
    served("tiny.en")
    settings.max_upload_bytes = 100_000
    direct, page = post_url(api, f"{web}/jfk.flac"), post_url(api, f"{web}/watch.html")
    run_worker("tiny.en")
    for task_id in (direct, page):
        assert task(api, task_id)["error"]["code"] == "file_too_large"
    assert list(settings.uploads.iterdir()) == []


def test_page_checks_refuse_playlists_live_streams_and_long_media(settings: Settings) -> None:
    with pytest.raises(NoMediaFound, match="playlist"):
        _check({"_type": "playlist", "entries": []}, "http://x.test/list", settings)
    with pytest.raises(NoMediaFound, match="live"):
        _check({"is_live": True}, "http://x.test/live", settings)
    with pytest.raises(MediaTooLong, match="over the"):
        _check({"duration": settings.max_media_duration_s + 1}, "http://x.test/long", settings)
    _check({"duration": 60}, "http://x.test/ok", settings)


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"url": "ftp://example.com/a.mp3"}, "http"), ({"url": "not a url"}, "http"), ({}, "either")],
)
def test_url_is_validated_at_the_api(
    api: httpx.Client, served: Callable[[str], None], fields: dict[str, str], message: str
) -> None:
    served("tiny.en")
    response = api.post("/v1/tasks", data=fields or {"priority": "high"})
    assert response.status_code == 422 and message in response.text


def test_url_and_file_together_are_refused(
    api: httpx.Client, served: Callable[[str], None], settings: Settings
) -> None:
    served("tiny.en")
    with JFK.open("rb") as handle:
        response = api.post("/v1/tasks", data={"url": "http://x.test/a.mp3"}, files={"file": handle})
    assert response.status_code == 422 and "not both" in response.text
    assert list(settings.uploads.iterdir()) == []


def silent_video(path: Path) -> None:
    """A short video with no audio stream at all."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 20, dtype=np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_probing_refuses_media_without_audio_and_invents_nothing_for_music(
    api: httpx.Client, served: Callable[[str], None], run_worker: RunWorker, tmp_path: Path
) -> None:
    served("base")
    silent = tmp_path / "silent.mp4"
    silent_video(silent)
    no_audio = submit(api, silent, model="base").json()["id"]
    no_speech = submit(api, DATA / "video" / "big_buck_bunny_small_nospeech.mp4", model="base").json()["id"]
    speech = submit(api, DATA / "video" / "bbb_with_jfk_speech.mp4", model="base").json()["id"]
    run_worker("base")

    refused = task(api, no_audio)
    assert refused["status"] == "failed" and refused["error"]["code"] == "no_audio_stream"
    music = task(api, no_speech)
    assert music["status"] == "completed" and music["result"]["text"] == "" and music["result"]["segments"] == []
    assert music["duration"] == pytest.approx(5.3, abs=0.1)
    video = task(api, speech)
    assert video["status"] == "completed" and "ask not what your country" in video["result"]["text"]


@pytest.mark.parametrize("path", ["slow/jfk.flac", "slow.html"])
def test_cancel_while_downloading_stops_the_download(
    api: httpx.Client,
    served: Callable[[str], None],
    web: str,
    trickle: Trickle,
    settings: Settings,
    start_worker: StartWorker,
    path: str,
) -> None:
    served("tiny.en")
    task_id = post_url(api, f"{web}/{path}")
    follower = submit(api, DATA / "audio" / "fsdd" / "4_theo_0.wav").json()["id"]
    worker = start_worker()
    try:
        assert trickle.begun.wait(120), "the download began"
        assert task(api, task_id)["status"] == "downloading"
        assert api.post(f"/v1/tasks/{task_id}/cancel").json()["status"] == "cancelled"
        errors = worker.finish()  # the download never ends unless abandoned
    finally:
        worker.kill()
    assert worker.returncode == 0, errors
    assert trickle.hung_up.wait(30), "the download was abandoned"
    assert task(api, follower)["status"] == "completed"
    assert task(api, task_id)["status"] == "cancelled"
    assert list(settings.uploads.iterdir()) == []

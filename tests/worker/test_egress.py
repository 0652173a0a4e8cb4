"""Outbound fetches: every connection yt-dlp opens passes the address check, no proxy is taken from the env, and
a download that trickles ends (at the deadline, or as soon as its task is cancelled).

The test's policy allows 127.0.0.2 (a "public" host here); 127.0.0.1 stands for an internal one.
"""

from __future__ import annotations

import gc
import json
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from yt_dlp.networking.common import Request
from yt_dlp.networking.exceptions import RequestError

from shared.errors import StorageFull, UnsafeUrl
from shared.netguard import Policy
from shared.settings import Settings
from shared.storage import UploadStorage
from tests.conftest import DATA, JFK, submit
from worker import download, egress

PUBLIC, INTERNAL = "127.0.0.2", "127.0.0.1"
SECRET_TITLE = "Internal secret"
Answer = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture(autouse=True)
def collect_refused_responses() -> Iterator[None]:
    """yt-dlp keeps the socket of an error answer (our proxy's 403) in the error it raises, until the garbage
    collector takes both: collect here, so that the warning does not land on whichever test runs at that moment."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


class Site:
    """A web server on one loopback address that answers from a table of routes and records every request."""

    def __init__(self, host: str) -> None:
        self.routes: dict[str, Answer] = {}
        self.requests: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                site.requests.append(self.path)
                site.routes.get(self.path.split("?")[0], send(404, "text/plain", b"not here"))(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def send(status: int, content_type: str, body: bytes, **headers: str) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def html(text: str) -> Answer:
    return send(200, "text/html; charset=utf-8", text.encode())


def by_agent(for_httpx: Answer, for_others: Answer) -> Answer:
    """One answer for the worker's own HTTP client, another for everything else (yt-dlp)."""
    return lambda handler: (for_httpx if "python-httpx" in handler.headers["User-Agent"] else for_others)(handler)


def manifest(*segments: str) -> Answer:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:12", "#EXT-X-MEDIA-SEQUENCE:0"]
    for segment in segments:
        lines += ["#EXTINF:11.0,", segment]
    return send(200, "application/vnd.apple.mpegurl", ("\n".join([*lines, "#EXT-X-ENDLIST"]) + "\n").encode())


def ts_segment(path: Path) -> bytes:
    """JFK's speech as an MPEG-TS segment (MP2 audio), as an HLS stream serves it."""
    with av.open(str(JFK)) as source, av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("mp2", rate=16000, layout="mono")
        for frame in source.decode(audio=0):
            frame.pts = None
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path.read_bytes()


class Trickle:
    """An answer that sends the start of a file at once, then a few bytes at a time, until the client goes."""

    def __init__(self, body: bytes, content_type: str) -> None:
        self.body = body
        self.content_type = content_type
        self.started = threading.Event()  # the download is under way: bytes have gone out after the head
        self.dropped = threading.Event()  # the client closed the connection
        self.closing = threading.Event()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", self.content_type)
        handler.send_header("Content-Length", str(len(self.body)))
        handler.end_headers()
        try:
            handler.wfile.write(self.body[:4096])
            for start in range(4096, len(self.body), 16):  # 64 bytes a second: a day for a few MB
                if self.closing.wait(0.25):
                    return
                handler.wfile.write(self.body[start : start + 16])
                handler.wfile.flush()
                self.started.set()
        except OSError:
            self.dropped.set()


@pytest.fixture
def public() -> Iterator[Site]:
    site = Site(PUBLIC)
    site.routes["/jfk.flac"] = send(200, "audio/flac", JFK.read_bytes())
    site.routes["/watch.html"] = html(f'<html><body><video src="{site.url}/jfk.flac"></video></body></html>')
    site.routes["/slow.html"] = html(f'<html><body><video src="{site.url}/slow.flac"></video></body></html>')
    yield site
    site.close()


@pytest.fixture
def trickle(public: Site) -> Iterator[Trickle]:
    """`/slow.flac` (and the page `/slow.html` showing it) on the public host: JFK's speech, trickling."""
    answer = Trickle(JFK.read_bytes(), "audio/flac")
    public.routes["/slow.flac"] = answer
    yield answer
    answer.closing.set()


@pytest.fixture
def internal(public: Site) -> Iterator[Site]:
    """An internal host whose page holds media from the public one: fetched, it would complete with its title."""
    site = Site(INTERNAL)
    site.routes["/secret.html"] = html(
        f"<html><head><title>{SECRET_TITLE}</title></head>"
        f'<body><video src="{public.url}/jfk.flac"></video></body></html>'
    )
    site.routes["/seg0.ts"] = send(200, "video/mp2t", b"\x47" * 188 * 4)
    yield site
    site.close()


@pytest.fixture
def policed(settings: Settings) -> Settings:
    return settings.model_copy(update={"allowed_hosts": [PUBLIC]})


def fetch(url: str, settings: Settings) -> download.Fetched:
    return download.fetch(url, UploadStorage(settings.uploads), settings, lambda: None)


@pytest.mark.slow
def test_every_connection_yt_dlp_opens_is_checked(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: Callable[..., subprocess.Popen[str]],
    public: Site,
    internal: Site,
) -> None:
    served("tiny.en")
    inside = f"{internal.url}/secret.html"
    public.routes["/agent.html"] = by_agent(
        html("<html><body>Nothing here</body></html>"), send(302, "text/html", b"", Location=inside)
    )
    public.routes["/refresh.html"] = html(f'<meta http-equiv="refresh" content="0; url={inside}">')
    public.routes["/fragments.m3u8"] = manifest(f"{internal.url}/seg0.ts")
    public.routes["/variants.m3u8"] = send(
        200,
        "application/vnd.apple.mpegurl",
        f'#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS="mp4a.40.2"\n{internal.url}/media.m3u8\n'.encode(),
    )
    api = api_factory(allowed_hosts=[PUBLIC])
    names = ["agent.html", "refresh.html", "fragments.m3u8", "variants.m3u8"]
    ids = {name: api.post("/v1/tasks", data={"url": f"{public.url}/{name}"}).json()["id"] for name in names}
    assert start_worker(allowed_hosts=[PUBLIC]).wait(timeout=180) == 0

    for name, task_id in ids.items():
        task = api.get(f"/v1/tasks/{task_id}").json()
        assert task["status"] == "failed", (name, task)
        assert task["error"]["code"] == "unsafe_url" and INTERNAL in task["error"]["message"], (name, task["error"])
        assert SECRET_TITLE not in json.dumps(task), name
    assert internal.requests == [], "the internal host was never asked for anything"


def test_hls_is_fetched_natively_segment_by_segment(public: Site, policed: Settings, tmp_path: Path) -> None:
    public.routes["/seg0.ts"] = send(200, "video/mp2t", ts_segment(tmp_path / "seg0.ts"))
    public.routes["/talk.m3u8"] = manifest(f"{public.url}/seg0.ts")
    fetched = fetch(f"{public.url}/talk.m3u8", policed)
    assert fetched.format == "mpeg-ts" and fetched.size_bytes == (tmp_path / "seg0.ts").stat().st_size
    assert public.requests.count("/seg0.ts") == 1


def test_a_refused_fragment_fails_the_download(public: Site, internal: Site, policed: Settings) -> None:
    public.routes["/talk.m3u8"] = manifest(f"{internal.url}/seg0.ts")
    with pytest.raises(UnsafeUrl, match=INTERNAL):
        fetch(f"{public.url}/talk.m3u8", policed)
    assert internal.requests == []


@pytest.mark.parametrize("path", ["jfk.flac", "watch.html"])
def test_a_download_onto_a_volume_under_its_reserve_is_refused(public: Site, policed: Settings, path: str) -> None:
    """Direct media and a page for yt-dlp alike: nothing is fetched or written while the volume lacks its reserve."""
    policed.uploads.mkdir(parents=True, exist_ok=True)
    storage = UploadStorage(policed.uploads, reserve_bytes=shutil.disk_usage(policed.uploads).free + 2**30)
    with pytest.raises(StorageFull):
        download.fetch(f"{public.url}/{path}", storage, policed, lambda: None)
    assert public.requests == [] and list(policed.uploads.iterdir()) == []


def test_proxies_in_the_environment_are_not_used(
    public: Site, policed: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    trap = Site("127.0.0.3")
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, trap.url)
            monkeypatch.setenv(name.lower(), trap.url)
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        assert fetch(f"{public.url}/jfk.flac", policed).platform == "direct"
        assert fetch(f"{public.url}/watch.html", policed).platform == "HTML5MediaEmbed"
        assert trap.requests == []
    finally:
        trap.close()


def test_a_request_cannot_name_its_own_proxy(public: Site, internal: Site) -> None:
    """Extractors can set a request's proxy (a header, or `proxies`); a page can smuggle one into an embed URL."""
    trap = Site("127.0.0.3")
    try:
        with (
            egress.EgressProxy(Policy([PUBLIC]), 5, lambda: None) as proxy,
            download._YoutubeDL({"proxy": proxy.url, "quiet": True}) as ydl,
        ):
            header = Request(f"{public.url}/jfk.flac", headers={"Ytdl-Request-Proxy": trap.url})
            assert ydl.urlopen(header).read() == JFK.read_bytes()
            for proxies in ({"all": None}, {"all": trap.url}):
                with pytest.raises(RequestError):  # 403 from the proxy, then a proxy that has stopped
                    ydl.urlopen(Request(f"{internal.url}/seg0.ts", proxies=proxies))
        assert trap.requests == [] and internal.requests == []
    finally:
        trap.close()


def test_media_fetched_other_than_over_http_is_refused(policed: Settings) -> None:
    """rtmp, rtsp and the like are fetched by helper programs that would connect past the proxy."""
    for media in ({"protocol": "rtmp"}, {"protocol": "m3u8_native+rtsp"}, {"url": "rtmp://10.0.0.1/live/a"}):
        with pytest.raises(UnsafeUrl, match="only http"):
            download._check(media, "http://media.test/page", policed)
    download._check({"protocol": "m3u8_native"}, "http://media.test/page", policed)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["slow.flac", "slow.html"])
def test_a_trickling_download_fails_at_the_deadline(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: Callable[..., subprocess.Popen[str]],
    public: Site,
    trickle: Trickle,
    path: str,
) -> None:
    served("tiny.en")
    api = api_factory(allowed_hosts=[PUBLIC])
    task_id = api.post("/v1/tasks", data={"url": f"{public.url}/{path}"}).json()["id"]
    started = time.monotonic()
    assert start_worker(allowed_hosts=[PUBLIC], download_deadline_s=3).wait(timeout=60) == 0
    error = api.get(f"/v1/tasks/{task_id}").json()["error"]
    assert error is not None and error["code"] == "download_too_slow", error
    assert time.monotonic() - started < 60, "the trickle (a day long) was given up at the deadline"
    assert trickle.dropped.wait(timeout=5), "the connection was closed"


@pytest.mark.slow
@pytest.mark.parametrize("path", ["slow.flac", "slow.html"])
def test_a_cancel_during_a_trickle_is_seen_at_once(
    api_factory: Callable[..., httpx.Client],
    served: Callable[[str], None],
    start_worker: Callable[..., subprocess.Popen[str]],
    public: Site,
    trickle: Trickle,
    settings: Settings,
    path: str,
) -> None:
    served("tiny.en")
    api = api_factory(allowed_hosts=[PUBLIC])
    task_id = api.post("/v1/tasks", data={"url": f"{public.url}/{path}"}).json()["id"]
    follower = submit(api, DATA / "audio" / "fsdd" / "4_theo_0.wav").json()["id"]
    worker = start_worker(allowed_hosts=[PUBLIC])
    assert trickle.started.wait(timeout=60), "the download began"
    assert api.post(f"/v1/tasks/{task_id}/cancel").json()["status"] == "cancelled"
    assert trickle.dropped.wait(timeout=10), "the worker dropped the download within seconds of the cancel"
    assert worker.wait(timeout=120) == 0
    assert api.get(f"/v1/tasks/{follower}").json()["status"] == "completed"
    assert api.get(f"/v1/tasks/{task_id}").json()["status"] == "cancelled"
    assert list(settings.uploads.iterdir()) == []

"""Fetching a task's media from a URL: a direct file with httpx, a page through yt-dlp."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import yt_dlp
from yt_dlp.compat import urllib_req_to_req
from yt_dlp.networking.common import Request

from shared import netguard
from shared.errors import (
    DownloadFailed,
    DownloadTooSlow,
    FileTooLarge,
    MediaTooLong,
    NoMediaFound,
    UnsafeUrl,
    UnsupportedMedia,
)
from shared.media import SNIFF_BYTES, sniff
from shared.netguard import Policy
from shared.settings import Settings
from shared.storage import UploadStorage
from worker import egress

log = logging.getLogger(__name__)

Check = Callable[[], None]
# What yt-dlp can find media in: web pages, and HLS / DASH manifests.
_PAGE_TYPES = {
    "text/html",
    "application/xhtml+xml",
    "application/vnd.apple.mpegurl",
    "application/x-mpegurl",
    "audio/mpegurl",
    "application/dash+xml",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# How yt-dlp may fetch media: over HTTP, natively, so through the egress proxy (rtmp, rtsp and the like are not).
_PROTOCOLS = {"http", "https", "m3u8", "m3u8_native", "http_dash_segments"}


@dataclass(frozen=True)
class Fetched:
    """Media now on the upload volume, and what is known of where it came from."""

    upload_name: str
    platform: str
    title: str | None
    format: str
    size_bytes: int
    duration: float | None = None


def fetch(url: str, storage: UploadStorage, settings: Settings, check: Check) -> Fetched:
    """Download the media a URL points at, directly if it is a media file, else through yt-dlp.

    `check` is called at every read (and while waiting for one) and raises to abandon the download (the task
    was cancelled); past `download_deadline_s` the download fails with DownloadTooSlow. Nothing is fetched while
    the volume is under its reserve (StorageFull).
    """
    Policy(settings.allowed_hosts).check_url(url)
    storage.check_room()
    check = _within_deadline(check, url, settings.download_deadline_s)
    direct = _direct(url, storage, settings, check)
    return direct if direct is not None else _page(url, storage, settings, check)


def _direct(url: str, storage: UploadStorage, settings: Settings, check: Check) -> Fetched | None:
    """Stream a media file to the volume; None when the URL serves something else, such as a web page."""
    try:
        with (
            netguard.client(Policy(settings.allowed_hosts), settings.download_timeout_s) as http,
            http.stream("GET", url, follow_redirects=True) as response,
        ):
            if response.status_code >= 400:
                raise DownloadFailed(f"{url} answered HTTP {response.status_code}")
            chunks = _checked(response.iter_bytes(), check)
            head = _head(chunks)
            if not head:
                raise UnsupportedMedia(f"{url} served an empty file")
            if sniff(head[:SNIFF_BYTES]) is None:
                _refuse_unless_page(url, response.headers.get("content-type", ""))
                return None
            with storage.receive(settings.max_upload_bytes) as upload:
                upload.write(head)
                for chunk in chunks:
                    upload.write(chunk)
                upload.commit()
            title = unquote(PurePosixPath(urlsplit(str(response.url)).path).name) or None
    except httpx.HTTPError as exc:
        refusal = netguard.is_refusal(exc)
        if refusal:
            raise UnsafeUrl(refusal) from exc
        raise DownloadFailed(f"could not fetch {url}: {type(exc).__name__}: {exc}") from exc
    assert upload.format is not None
    return Fetched(
        upload_name=upload.name, platform="direct", title=title, format=upload.format, size_bytes=upload.size
    )


def _within_deadline(check: Check, url: str, seconds: float) -> Check:
    """`check`, which also fails the download once `seconds` have passed: a trickle must not hold a worker."""
    ends = time.monotonic() + seconds

    def checked() -> None:
        check()
        if time.monotonic() > ends:
            raise DownloadTooSlow(f"the media at {url} did not arrive within the {seconds:.0f}-second download limit")

    return checked


def _checked(chunks: Iterator[bytes], check: Check) -> Iterator[bytes]:
    """The body as it arrives from the network, one read at a time, with `check` run at each."""
    for chunk in chunks:
        check()
        yield chunk


def _refuse_unless_page(url: str, content_type: str) -> None:
    """A page or a stream manifest goes on to yt-dlp; anything else that is not media is refused."""
    kind = content_type.split(";")[0].strip().lower()
    if kind and kind not in _PAGE_TYPES:
        raise UnsupportedMedia(f"{url} serves {kind}, not audio or video")


def _head(chunks: Iterator[bytes]) -> bytes:
    """Enough of the body to recognise media by."""
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= SNIFF_BYTES:
            break
    return head


class _Logger:
    """Sends yt-dlp's chatter to our log instead of the terminal."""

    def debug(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def warning(self, message: str) -> None:
        log.info("yt-dlp: %s", message)

    def error(self, message: str) -> None:
        log.info("yt-dlp: %s", message)


def _options(folder: Path, settings: Settings, proxy: str) -> dict[str, Any]:
    no_ffmpeg = folder / "no-ffmpeg"
    no_ffmpeg.mkdir()
    return {
        "proxy": proxy,
        # HLS and DASH are read natively, fragment by fragment through the proxy. ffmpeg is never run: yt-dlp
        # would hand it the streams it cannot read itself, and ffmpeg fetches them on its own.
        "external_downloader": {"default": "native"},
        "ffmpeg_location": str(no_ffmpeg),
        "skip_unavailable_fragments": False,
        "format": "bestaudio/best",
        "noplaylist": True,
        "outtmpl": {"default": str(folder / "media.%(ext)s")},
        "max_filesize": settings.max_upload_bytes,
        "socket_timeout": settings.download_timeout_s,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "cachedir": False,
        "enable_file_urls": False,
        "logger": _Logger(),
    }


class _YoutubeDL(yt_dlp.YoutubeDL):  # type: ignore[misc]  # yt-dlp is untyped
    """yt-dlp whose every request goes through the egress proxy, whatever proxy an extractor or a page asks for."""

    def urlopen(self, req: Any) -> Any:
        """Send a request, through the proxy these options name and no other."""
        if not isinstance(req, Request):
            req = Request(req) if isinstance(req, str) else urllib_req_to_req(req)
        req.headers.pop("Ytdl-Request-Proxy", None)
        req.proxies = {"all": self.params["proxy"]}
        return super().urlopen(req)


def _page(url: str, storage: UploadStorage, settings: Settings, check: Check) -> Fetched:
    """Best audio of the media on a page yt-dlp knows (its generic extractor finds HTML5 media too).

    yt-dlp makes every request through the egress proxy: pages, redirects, manifests and fragments are all
    checked where the connection is made. A refused connection fails the download, wherever yt-dlp met it.
    """
    proxy = egress.EgressProxy(Policy(settings.allowed_hosts), settings.download_timeout_s, check)
    with storage.scratch() as folder, proxy, _YoutubeDL(_options(folder, settings, proxy.url)) as ydl:
        try:
            info = ydl.extract_info(url, download=False)
            _check(info, url, settings)
            ydl.process_ie_result(info, download=True)
        except yt_dlp.utils.DownloadError as exc:
            proxy.raise_failure()
            raise _classify(url, str(exc)) from exc
        proxy.raise_failure()
        files = [path for path in folder.iterdir() if path.is_file() and not path.name.endswith(".part")]
        if not files:
            raise FileTooLarge(f"the media at {url} is larger than the {settings.max_upload_bytes}-byte limit")
        name, media_format = storage.adopt(files[0], settings.max_upload_bytes)
        size = (storage.path(name)).stat().st_size
    return Fetched(
        upload_name=name,
        platform=str(info.get("extractor_key") or info.get("extractor") or "unknown"),
        title=info.get("title"),
        format=media_format,
        size_bytes=size,
        duration=info.get("duration"),
    )


def _check(info: dict[str, Any] | None, url: str, settings: Settings) -> None:
    """Refuse what would not end well: nothing, a playlist, a live stream, media too long or too large."""
    if not info:
        raise NoMediaFound(f"no audio or video found at {url}")
    if info.get("_type") == "playlist" or info.get("entries") is not None:
        raise NoMediaFound(f"{url} is a playlist; submit its items one at a time")
    if info.get("is_live"):
        raise NoMediaFound(f"{url} is a live stream; only recorded media can be transcribed")
    duration = info.get("duration")
    if duration and duration > settings.max_media_duration_s:
        raise MediaTooLong(
            f"the media at {url} lasts {duration:.0f} s, over the {settings.max_media_duration_s} s limit"
        )
    size = info.get("filesize") or info.get("filesize_approx")
    if size and size > settings.max_upload_bytes:
        raise FileTooLarge(f"the media at {url} is larger than the {settings.max_upload_bytes}-byte limit")
    protocol = info.get("protocol") or (yt_dlp.utils.determine_protocol(info) if info.get("url") else None)
    if protocol is not None and not set(str(protocol).split("+")) <= _PROTOCOLS:
        raise UnsafeUrl(f"the media at {url} is served over {protocol}; only http(s), HLS and DASH are fetched")


def _classify(url: str, message: str) -> Exception:
    """yt-dlp's error as one of ours, with its message cleaned up."""
    text = _ANSI.sub("", message).replace("ERROR: ", "").strip()
    if "Unsupported URL" in text:
        return NoMediaFound(f"no audio or video found at {url}")
    return DownloadFailed(f"could not fetch {url}: {text}")

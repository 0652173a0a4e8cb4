"""The upload volume: the only code that writes, names or removes media files there."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType

from shared.errors import FileTooLarge, StorageFull, UnsupportedMedia
from shared.media import SNIFF_BYTES, sniff

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[0-9a-f]{32}$")
_PARTIAL = ".part"
_SCRATCH = ".scratch-"
_OUT = ".out-"
_CHUNKS = ".chunks"
# What a write says when the volume (or the writer's quota) has no room left.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_NO_ROOM = "the upload volume has no room left for this media; try again once space is freed"


@contextmanager
def volume_writes() -> Iterator[None]:
    """Around writes to the volume: one that finds it full raises StorageFull, which says so, not a bare OSError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _FULL:
            raise
        log.error("the upload volume is full: %s", exc)
        raise StorageFull(_NO_ROOM) from exc


class PendingUpload:
    """A file being received: written under a temporary name, checked as it grows, renamed when complete."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.name = uuid.uuid4().hex
        self.max_bytes = max_bytes
        self.size = 0
        self.format: str | None = None
        self._head = b""
        self._partial = root / f"{self.name}{_PARTIAL}"
        self._final = root / self.name
        with volume_writes():  # no inode left is a full volume too
            self._file = self._partial.open("xb")

    def write(self, chunk: bytes) -> None:
        """Append a chunk; FileTooLarge past the limit, UnsupportedMedia once the head is not media."""
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise FileTooLarge(f"the file is larger than the {self.max_bytes}-byte limit")
        if self.format is None and len(self._head) < SNIFF_BYTES:
            self._head += chunk[: SNIFF_BYTES - len(self._head)]
            if len(self._head) >= SNIFF_BYTES:
                self._check_media()
        with volume_writes():
            self._file.write(chunk)

    def sha256(self) -> str:
        """The digest of the committed file, read back only when asked (an idempotent submit), off every other path."""
        with self._final.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    def commit(self) -> None:
        """Close the file and give it its final name."""
        if self.format is None:
            self._check_media()
        with volume_writes():
            self._file.close()
        os.replace(self._partial, self._final)

    def discard(self) -> None:
        """Close and remove whatever was written (what a full volume would not take is dropped)."""
        with suppress(OSError):
            self._file.close()
        self._partial.unlink(missing_ok=True)
        self._final.unlink(missing_ok=True)

    def _check_media(self) -> None:
        if self.size == 0:
            raise UnsupportedMedia("the file is empty")
        self.format = sniff(self._head)
        if self.format is None:
            raise UnsupportedMedia("the file is not audio or video in a format the service can read")

    def __enter__(self) -> PendingUpload:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None:
            self.discard()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _last_write(path: Path) -> float:
    """When a file, or anything in a folder, was last written."""
    if not path.is_dir():
        return path.stat().st_mtime
    return max([path.stat().st_mtime, *(item.stat().st_mtime for item in path.rglob("*"))])


class UploadStorage:
    """Media files on the shared upload volume, named by the server."""

    def __init__(self, root: Path, reserve_bytes: int = 0) -> None:
        self.root = root
        self.reserve_bytes = reserve_bytes
        root.mkdir(parents=True, exist_ok=True)

    def receive(self, max_bytes: int) -> PendingUpload:
        """Start receiving a new upload; StorageFull while the volume has less free space than its reserve."""
        self.check_room()
        return PendingUpload(self.root, max_bytes)

    def free_bytes(self) -> int:
        """Free space on the volume."""
        return shutil.disk_usage(self.root).free

    def check_room(self) -> None:
        """StorageFull while the volume has less free space than its reserve."""
        free = self.free_bytes()
        if free < self.reserve_bytes:
            log.error("the upload volume has %d bytes free, under its %d-byte reserve", free, self.reserve_bytes)
            raise StorageFull(_NO_ROOM)

    @contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private folder on the volume for a downloader to write into; removed afterwards."""
        folder = self.root / f"{_SCRATCH}{uuid.uuid4().hex}"
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def adopt(self, path: Path, max_bytes: int) -> tuple[str, str]:
        """Move a downloaded file onto the volume under a server-chosen name; returns the name and format."""
        size = path.stat().st_size
        if size > max_bytes:
            raise FileTooLarge(f"the media is larger than the {max_bytes}-byte limit")
        with path.open("rb") as handle:
            media_format = sniff(handle.read(SNIFF_BYTES)) if size else None
        if media_format is None:
            raise UnsupportedMedia("the downloaded file is empty or not audio or video")
        name = uuid.uuid4().hex
        os.replace(path, self.root / name)
        return name, media_format

    def scratch_file(self, suffix: str) -> Path:
        """A fresh path on the volume for a file the server makes (such as converted audio)."""
        return self.root / f"{_OUT}{uuid.uuid4().hex}{suffix}"

    def remove_file(self, path: Path) -> None:
        """Delete a scratch file made on this volume."""
        if path.parent != self.root or not path.name.startswith(_OUT):
            raise ValueError(f"not a scratch file of this volume: {path}")
        path.unlink(missing_ok=True)

    def path(self, name: str) -> Path:
        """Where a stored upload lives; refuses any name the server did not choose."""
        if not _NAME.match(name):
            raise ValueError(f"not an upload name: {name!r}")
        return self.root / name

    def chunk_path(self, task_id: str, index: int, run: int) -> Path:
        """Where one chunk of a split task keeps its audio, in a folder of the run that split it."""
        return self._chunk_dir(task_id) / str(run) / f"{index:04d}.wav"

    def remove_chunks(self, task_id: str, run: int | None = None) -> None:
        """Delete a split task's chunk audio, of one run or of all, if any (and emptied folders)."""
        task_folder = self._chunk_dir(task_id)
        shutil.rmtree(task_folder / str(run) if run is not None else task_folder, ignore_errors=True)
        for folder in (task_folder, task_folder.parent):
            with suppress(OSError):
                folder.rmdir()

    def _chunk_dir(self, task_id: str) -> Path:
        if not _NAME.match(task_id):
            raise ValueError(f"not a task id: {task_id!r}")
        return self.root / _CHUNKS / task_id

    def remove_leftovers(self, stale_s: float, orphaned_s: float, keep_uploads: bool) -> list[str]:
        """Remove what processes killed mid-write left behind; the paths removed, relative to the volume.

        Partial uploads, downloaders' folders and converted audio are left behind once their last write is `stale_s`
        old: each is written to all along while in use, then renamed or removed. A split task's chunk folder, and
        an upload unless uploads are kept, is orphaned `orphaned_s` after its last write: longer than a task lasts.
        """
        removed = []
        now = time.time()
        for entry in self.root.iterdir():
            with suppress(FileNotFoundError):  # gone meanwhile: renamed, or removed by its own process
                for candidate, limit in self._leftover_limits(entry, stale_s, orphaned_s, keep_uploads):
                    with suppress(FileNotFoundError):
                        if now - _last_write(candidate) > limit:
                            _remove(candidate)
                            removed.append(str(candidate.relative_to(self.root)))
        return removed

    @staticmethod
    def _leftover_limits(
        entry: Path, stale_s: float, orphaned_s: float, keep_uploads: bool
    ) -> list[tuple[Path, float]]:
        name = entry.name
        if name.endswith(_PARTIAL) or name.startswith((_SCRATCH, _OUT)):
            return [(entry, stale_s)]
        if name == _CHUNKS:
            return [(folder, orphaned_s) for folder in entry.iterdir()]
        if _NAME.match(name) and not keep_uploads:
            return [(entry, orphaned_s)]
        return []

    def remove(self, name: str) -> None:
        """Delete a stored upload, if it is still there."""
        self.path(name).unlink(missing_ok=True)

    def names(self) -> list[str]:
        """Every file on the volume, complete or partial (for tests and clean-up)."""
        return sorted(entry.name for entry in self.root.iterdir())

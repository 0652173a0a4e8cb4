"""Model resolution: bundled packages, the joined base model, local paths, and the hub path offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.errors import ModelUnavailable
from worker.models import BASE_MODEL_SHA256, resolve_model


def test_tiny_en_comes_from_its_package(tmp_path: Path) -> None:
    path = resolve_model("tiny.en", tmp_path, allow_download=False)
    assert (path / "model.bin").is_file() and (path / "config.json").is_file()
    assert list(tmp_path.iterdir()) == [], "nothing to join for tiny.en"


def test_base_is_joined_once_verified_and_reused(tmp_path: Path) -> None:
    path = resolve_model("base", tmp_path, allow_download=False)
    assert path == tmp_path / "base"
    assert {p.name for p in path.iterdir()} >= {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    assert (path / ".whisperq-verified").read_text().strip() == BASE_MODEL_SHA256
    joined_at = (path / "model.bin").stat().st_mtime_ns
    assert resolve_model("base", tmp_path, allow_download=False) == path
    assert (path / "model.bin").stat().st_mtime_ns == joined_at
    assert [p.name for p in tmp_path.iterdir()] == ["base"], "no staging directory is left behind"


def test_local_directory_is_used_as_is(tmp_path: Path) -> None:
    tiny = resolve_model("tiny.en", tmp_path, allow_download=False)
    assert resolve_model(str(tiny), tmp_path, allow_download=False) == tiny
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailable, match="no model.bin"):
        resolve_model(str(tmp_path / "empty"), tmp_path, allow_download=False)


def test_other_names_go_to_the_hub_and_fail_clearly_offline(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        resolve_model("large-v3", tmp_path, allow_download=False)
    assert "'large-v3'" in caught.value.message and "WHISPERQ_ALLOW_DOWNLOAD" in caught.value.message
    assert caught.value.code == "model_unavailable"

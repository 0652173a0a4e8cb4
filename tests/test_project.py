"""The project as a whole: docs that match the code, an ingress without the engine, lint and types."""

from __future__ import annotations

import subprocess
import sys

from shared.settings import Settings, env_example
from tests.conftest import PROJECT

README = (PROJECT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    assert (PROJECT / ".env.example").read_text() == env_example(), "regenerate: whisperq env-example > .env.example"
    for name in Settings.model_fields:
        assert f"| `WHISPERQ_{name.upper()}` |" in README, f"WHISPERQ_{name.upper()} missing from the README"


def test_ci_runs_the_readme_test_command() -> None:
    test_it = README.split("## Test it", 1)[1].split("```bash\n", 1)[1].split("\n```", 1)[0]
    assert test_it in (PROJECT / ".ci" / "run").read_text().splitlines()


def test_api_imports_without_the_engine() -> None:
    check = (
        "import sys, api.main, api.routes.tasks; "
        "loaded = {'faster_whisper', 'ctranslate2', 'torch', 'av', 'onnxruntime'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", check], cwd=PROJECT, check=True)


def test_ruff_passes() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=PROJECT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


def test_mypy_strict_passes() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=PROJECT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout

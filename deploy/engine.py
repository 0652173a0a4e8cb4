"""The container engine for the deployment check: podman behind a Docker-compatible socket, and Compose v2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
CONTAINERS_CONF = Path(__file__).with_name("containers.conf")
COMPOSE_FILES = [
    PROJECT / "docker-compose.yml",
    PROJECT / "compose.cpu.yaml",
    Path(__file__).with_name("compose.ci.yaml"),
]
TOOLS = ("podman", "runc", "debootstrap", "docker-compose")


def why_containers_cannot_run() -> str | None:
    """One line saying why containers cannot run on this host at all; None where they can."""
    if os.geteuid() != 0:
        return "containers need root here (podman runs them rootful with runc)"
    probe = subprocess.run(["unshare", "--mount", "--pid", "--net", "--uts", "--fork", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"this host gives no namespaces to processes ({probe.stderr.decode().strip()})"
    return None


def missing_tools() -> list[str]:
    """Tools the check needs that are not installed (`.ci/run` installs them)."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def engine_env(socket_path: Path | None = None) -> dict[str, str]:
    """The environment podman and Compose run in: our podman settings, and the socket Compose talks to."""
    env = dict(os.environ, CONTAINERS_CONF=str(CONTAINERS_CONF))
    if socket_path is not None:
        env["DOCKER_HOST"] = f"unix://{socket_path}"
    return env


def podman(*args: str, capture: bool = True, timeout_s: float = 1800) -> str:
    """Run podman with the check's settings; what it printed on stdout."""
    done = subprocess.run(
        ["podman", *args], env=engine_env(), capture_output=capture, text=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args[:3])} failed ({done.returncode}): {(done.stderr or '')[-2000:]}")
    return done.stdout or ""


@contextmanager
def docker_socket(folder: Path) -> Iterator[Path]:
    """`podman system service` on a socket of its own, for as long as the block runs."""
    socket_path = folder / "podman.sock"
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket_path}"],
        env=engine_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not socket_path.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("podman system service did not open its socket")
            time.sleep(0.1)
        yield socket_path
    finally:
        service.terminate()
        service.wait(timeout=60)


@contextmanager
def health_checks(project: str, every_s: float = 3.0) -> Iterator[None]:
    """Run the health checks of the project's containers on a timer, for as long as the block runs.

    podman schedules health checks with systemd timers; on a host without systemd nothing runs them, no container
    ever turns healthy, and Compose waits for ever on `condition: service_healthy`.
    """
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(every_s):
            listed = subprocess.run(
                ["podman", "ps", "--quiet", "--filter", f"label=com.docker.compose.project={project}"],
                env=engine_env(),
                capture_output=True,
                text=True,
            )
            for container in listed.stdout.split():
                subprocess.run(["podman", "healthcheck", "run", container], env=engine_env(), capture_output=True)

    ticker = threading.Thread(target=tick, name="health-checks", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()


class Compose:
    """`docker-compose` (Compose v2) on the project's files, as one project, talking to the podman socket."""

    def __init__(self, socket_path: Path, project: str, env: dict[str, str]) -> None:
        self.project = project
        self.env = dict(engine_env(socket_path), **env)

    def __call__(self, *args: str, timeout_s: float = 900) -> str:
        files = [arg for path in COMPOSE_FILES for arg in ("-f", str(path))]
        command = ["docker-compose", "-p", self.project, "--project-directory", str(PROJECT), *files, *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"docker-compose {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}")
        return done.stdout

    def containers(self, service: str) -> list[dict[str, str]]:
        """The service's containers as `docker-compose ps` lists them (running ones)."""
        printed = self("ps", "--format", "json", service).strip()
        if not printed:
            return []
        rows = json.loads(printed) if printed.startswith("[") else [json.loads(line) for line in printed.splitlines()]
        return [dict(row) for row in rows]

    def healthy(self, services: list[str], replicas: dict[str, int]) -> bool:
        """Whether every container of these services is running and healthy, with as many replicas as asked."""
        for service in services:
            rows = self.containers(service)
            if len(rows) != replicas.get(service, 1) or any(row.get("Health") != "healthy" for row in rows):
                return False
        return True

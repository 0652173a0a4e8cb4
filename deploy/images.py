"""The images the deployment check builds: a local Debian base (no registry needed), Redis on it, the API and the
CPU worker from the project's own Dockerfiles."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.engine import engine_env, podman

BASE = "localhost/whisperq-check-base:bookworm"
REDIS = "localhost/whisperq-check-redis:latest"
# Where the base keeps the host's CA bundle: builds behind a TLS-inspecting proxy then still reach PyPI.
BASE_CA = "/usr/local/share/whisperq-check/ca.crt"
REDIS_CONTAINERFILE = f"""FROM {BASE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server redis-tools \\
    && rm -rf /var/lib/apt/lists/*
CMD ["redis-server"]
"""


@dataclass
class Built:
    """An image the check built: its name, how long the build took and how big it is."""

    name: str
    seconds: float
    size_mb: float


def host_ca_bundle() -> Path:
    """The CA bundle the host's own pip and Python trust."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return Path("/etc/ssl/certs/ca-certificates.crt")


def build_base(folder: Path, mirror: str) -> Built:
    """debootstrap a minimal Debian bookworm and import it as the base image."""
    started = time.monotonic()
    rootfs = folder / "rootfs"
    done = subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"debootstrap failed: {done.stdout[-1500:]}{done.stderr[-1500:]}")
    ca = rootfs / BASE_CA.lstrip("/")
    ca.parent.mkdir(parents=True)
    shutil.copyfile(host_ca_bundle(), ca)
    archive = folder / "rootfs.tar"
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
    shutil.rmtree(rootfs)
    podman("import", "--change", f"ENV PIP_CERT={BASE_CA}", str(archive), BASE)
    archive.unlink()
    return Built(BASE, time.monotonic() - started, size_mb(BASE))


def build(name: str, dockerfile: Path, build_args: dict[str, str] | None = None) -> Built:
    """`podman build` of a Dockerfile, its folder the context, on the local base."""
    started = time.monotonic()
    args = ["build", "--format", "docker", "--layers=false", "--network", "host", "--tag", name]
    for key, value in (build_args or {}).items():
        args += ["--build-arg", f"{key}={value}"]
    podman(*args, "--file", str(dockerfile), str(dockerfile.parent))
    return Built(name, time.monotonic() - started, size_mb(name))


def build_redis(folder: Path) -> Built:
    """Redis from Debian's packages, for the Compose file's redis service."""
    context = folder / "redis"
    context.mkdir()
    (context / "Containerfile").write_text(REDIS_CONTAINERFILE)
    return build(REDIS, context / "Containerfile")


def size_mb(image: str) -> float:
    """An image's size as the engine reports it, in MB."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).strip()) / 1e6


def exists(image: str) -> bool:
    """Whether the engine holds this image."""
    return subprocess.run(["podman", "image", "exists", image], env=engine_env()).returncode == 0


def image_ids() -> set[str]:
    """Every image the engine holds, intermediate ones included."""
    return set(podman("images", "--all", "--quiet", "--no-trunc").split())


def remove_images(ids: set[str]) -> None:
    """Remove these images (those the check made), whatever tags they carry."""
    if ids:
        podman("rmi", "--force", *sorted(ids))

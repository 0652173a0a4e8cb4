"""A whisperq stack started for a benchmark: embedded Redis, the API and N workers serving one model."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from shared.settings import Settings
from whisperq.redis_server import free_port
from whisperq.stack import Stack


@dataclass
class LocalService:
    """A running stack: its URL and its worker processes."""

    url: str
    stack: Stack

    def worker_peak_memory_mb(self) -> float:
        """The largest peak resident memory among the workers (VmHWM), in MiB."""
        peaks = [_vm_hwm_kb(process.pid) for process in self.stack.worker_processes]
        return max(peaks, default=0) / 1024


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@contextmanager
def local_service(settings: Settings, model: str, workers: int, live_workers: int = 0) -> Iterator[LocalService]:
    """Start a fresh stack in a temporary data folder (sharing the model cache) and stop it afterwards."""
    with tempfile.TemporaryDirectory(prefix="whisperq-bench-") as scratch:
        port = free_port()
        stack_settings = settings.model_copy(
            update={
                "redis_url": None,
                "data_dir": Path(scratch),
                "upload_dir": Path(scratch) / "uploads",
                "model": model,
                "default_model": model,
                "api_port": port,
                "api_host": "127.0.0.1",
                "log_level": "warning",
            }
        )
        with (Path(scratch) / "stack.log").open("wb") as log:
            stack = Stack(stack_settings, workers, log=log, live_workers=live_workers)
            try:
                stack.start()
                stack.wait_ready(f"http://127.0.0.1:{port}")
                yield LocalService(url=f"http://127.0.0.1:{port}", stack=stack)
            finally:
                stack.stop()

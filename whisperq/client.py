"""The command-line client: submit, status, list and result, over HTTP with httpx."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
from tqdm import tqdm

# `[#####.....]  42.0%  processing`: a fixed-width bar, then the share done and the task's status.
BAR_FORMAT = "[{bar:30}] {percentage:5.1f}%  {postfix[0]}"


class Client:
    """A thin wrapper over the task API."""

    def __init__(self, url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=60)

    def close(self) -> None:
        self.http.close()

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.is_error:
            try:
                error = response.json()["error"]
                raise SystemExit(f"error {response.status_code} {error['code']}: {error['message']}")
            except (ValueError, KeyError):
                raise SystemExit(f"error {response.status_code}: {response.text[:200]}") from None
        return response

    def submit(self, source: str, fields: dict[str, str]) -> dict[str, Any]:
        """Upload a file, or hand over a URL; the task as created."""
        if source.startswith(("http://", "https://")):
            return dict(self._checked(self.http.post("/v1/tasks", data={**fields, "url": source})).json())
        path = Path(source)
        if not path.is_file():
            raise SystemExit(f"no such file: {source}")
        with path.open("rb") as handle:
            response = self.http.post("/v1/tasks", data=fields, files={"file": (path.name, handle)}, timeout=None)
        return dict(self._checked(response).json())

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self._checked(self.http.get(f"/v1/tasks/{task_id}")).json())

    def tasks(self, params: dict[str, Any]) -> dict[str, Any]:
        return dict(self._checked(self.http.get("/v1/tasks", params=params)).json())

    def result(self, task_id: str, fmt: str) -> str:
        return self._checked(self.http.get(f"/v1/tasks/{task_id}/result", params={"format": fmt})).text

    def follow(self, task_id: str, out: IO[str]) -> dict[str, Any]:
        """Draw a progress bar from the task's event stream until it finishes; its final state."""
        with progress_bar(out) as bar, self.http.stream("GET", f"/v1/tasks/{task_id}/events", timeout=None) as response:
            self._checked(response)
            for kind, data in _events(response.iter_lines()):
                if kind == "final":
                    bar.postfix[0] = data["status"]
                    bar.update(1.0 - bar.n if data["status"] == "completed" else 0)
                    return data
                bar.postfix[0] = data.get("status") or "processing"
                bar.update((data.get("progress") or bar.n) - bar.n)
        return self.task(task_id)


def progress_bar(out: IO[str]) -> tqdm:
    """A bar from 0 to 1 on `out`, redrawn in place."""
    return tqdm(total=1.0, file=out, bar_format=BAR_FORMAT, ascii=".#", postfix=["queued"], mininterval=0)


def _events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs from server-sent-event lines."""
    kind = ""
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield kind, dict(json.loads(line.removeprefix("data: ")))


def summary(task: dict[str, Any]) -> str:
    """A task in a few lines."""
    lines = [
        f"id        {task['id']}",
        f"status    {task['status']}",
        f"progress  {task['progress'] * 100:.0f}%",
        f"model     {task['model']} ({task['task_type']}, {task['priority']})",
    ]
    if task.get("duration"):
        lines.append(f"audio     {task['duration']:.1f} s, language {task.get('language')}")
    if task.get("processing_seconds") is not None:
        lines.append(f"processed {task['processing_seconds']:.1f} s (real-time factor {task['real_time_factor']})")
    if task.get("error"):
        lines.append(f"error     {task['error']['code']}: {task['error']['message']}")
    return "\n".join(lines)


def write_output(text: str, output: str | None) -> None:
    """To a file, or to stdout."""
    if output:
        Path(output).write_text(text)
        print(f"written to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")

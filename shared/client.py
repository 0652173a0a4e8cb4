"""The command-line client: submit, status, list and result, over HTTP with httpx."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import IO, Any

import httpx

BAR_WIDTH = 30


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
        kind = ""
        with self.http.stream("GET", f"/v1/tasks/{task_id}/events", timeout=None) as response:
            self._checked(response)
            for line in response.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data = json.loads(line.removeprefix("data: "))
                    if kind == "final":
                        out.write("\n")
                        return dict(data)
                    draw(out, data.get("status") or "processing", data.get("progress"))
        return self.task(task_id)


def draw(out: IO[str], status: str, progress: float | None) -> None:
    """One line of progress, redrawn in place."""
    share = progress or 0.0
    filled = round(share * BAR_WIDTH)
    out.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {share * 100:5.1f}%  {status:<12}")
    out.flush()


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

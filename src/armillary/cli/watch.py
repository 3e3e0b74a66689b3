"""Following a job live: its Server-Sent Events, the live panel or JSON lines, and the per-host ✔/✗.

Used by ``jobs watch`` and by ``--wait`` of every command that starts a job (actions.py, jobs.py).

On a terminal, with the table output, a live panel shows the steps (✔ done, ✗ failed, a spinner
while running, the attempt) and the log lines scroll above it. Otherwise (stdout not a terminal, or
``-o json``), every event is one JSON line (``-o yaml``: one YAML document), then a last
``{"kind": "end"}`` line with the job's final status and per-host results, so scripts can consume
the stream; the human summary then goes to stderr. A dropped connection is resumed from the last
event seen (``Last-Event-ID``), so no event is shown twice or lost. ``follow`` raises
:class:`JobFailed` (exit code 1) when the job failed or was cancelled (or, for a bulk job, when any
of its systems failed).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import httpx
import typer
import yaml
from rich.live import Live
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from armillary.cli.client import ApiError, CliError, problem_of, transport_reason
from armillary.cli.common import client
from armillary.cli.output import OutputFormat, stderr, stdout

RECONNECT_ATTEMPTS = 5  # in a row, without an event in between
RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 8.0


def _job_line(job: dict[str, Any]) -> str:
    return f"job {job['id']} {job['status']}: {job['action']}"


# ---------------------------------------------------------------- the event stream


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, str | None, str]]:
    """Server-Sent Events as ``(event, id, data)``, from the lines of a ``text/event-stream``."""
    name, event_id, data = "message", None, []
    for line in lines:
        if line == "":
            if data:
                yield name, event_id, "\n".join(data)
            name, event_id, data = "message", None, []
            continue
        if line.startswith(":"):
            continue  # a comment: the server's keep-alive
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
        elif key == "id":
            event_id = value


def job_events(job_id: int) -> Iterator[dict[str, Any]]:
    """Every event of a job, live, until it ends; on a dropped connection, resume after the last one seen."""
    api = client()
    path = f"/jobs/{job_id}/events"
    last_id = 0
    failures = 0
    while True:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = str(last_id)
        try:
            with api.http.stream("GET", path, headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    error = ApiError(response.status_code, problem_of(response), api.request_id)
                    if response.status_code < 500:
                        raise error
                    raise httpx.TransportError(error.message)
                for name, _, data in _sse(response.iter_lines()):
                    if name == "end":
                        return
                    event = json.loads(data)
                    if not isinstance(event, dict) or int(event.get("id") or 0) <= last_id:
                        continue  # already shown before a reconnect
                    last_id = int(event["id"])
                    failures = 0
                    yield event
            reason = "the server closed the stream before the job ended"
        except (httpx.TransportError, json.JSONDecodeError) as exc:
            reason = transport_reason(exc)
        failures += 1
        if failures > RECONNECT_ATTEMPTS:
            raise CliError(
                f"lost the connection to {api.base_url} while following job {job_id}: {reason}",
                notes=[f"The job goes on without us; follow it again with: armillary jobs watch {job_id}"],
            )
        delay = min(RECONNECT_BASE_S * 2 ** (failures - 1), RECONNECT_MAX_S)
        stderr.print(Text(f"connection lost ({reason}); reconnecting in {delay:g}s…", style="yellow"))
        time.sleep(delay)


# ---------------------------------------------------------------- per-host results


def host_results(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """hostname → {status, error?}: a single-system job's summary, or a bulk job's batches and children."""
    hosts: dict[str, dict[str, Any]] = {}
    for hostname, status in ((job.get("summary") or {}).get("hosts") or {}).items():
        hosts[hostname] = {"status": status, **({"error": job["error"]} if job.get("error") else {})}
    if job.get("system_id") is not None:
        return hosts
    context = job.get("context") or {}
    batches = sorted((k for k in context if re.fullmatch(r"batch_\d+", k)), key=lambda k: int(k[6:]))
    for key in batches:
        for hostname, result in (context[key] or {}).items():
            if isinstance(result, dict):
                hosts[hostname] = result
    # A batch that failed (on_failure=stop) is not in the context: its children still say how they ended.
    for page in client().pages("/jobs", [("parent", str(job["id"]))], 1000, True):
        for child in page.get("items", []):
            for hostname, status in ((child.get("summary") or {}).get("hosts") or {}).items():
                result = {"status": status, "job_id": child["id"]}
                if child.get("error"):
                    result["error"] = child["error"]
                hosts.setdefault(hostname, result)
    return hosts


SUMMARY_HOSTS = 50  # list each host that succeeded up to this many; failures are always listed


def _failed(hosts: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(h for h, r in hosts.items() if r.get("status") != "succeeded")


def _summary_lines(job: dict[str, Any], hosts: dict[str, dict[str, Any]]) -> list[Text]:
    """``✔ web1: succeeded``, ``✗ web2: failed (why)``; for a bulk job, the counts."""
    ok, bad = sorted(set(hosts) - set(_failed(hosts))), _failed(hosts)
    lines = [Text.assemble(("✔ ", "bold green"), f"{h}: succeeded") for h in ok]
    if len(ok) > SUMMARY_HOSTS:
        lines = [Text.assemble(("✔ ", "bold green"), f"{len(ok)} systems succeeded")]
    for h in bad:
        error = f" ({hosts[h]['error']})" if hosts[h].get("error") else ""
        lines.append(Text.assemble(("✗ ", "bold red"), f"{h}: {hosts[h].get('status')}{error}"))
    if job.get("system_id") is None:
        total = (job.get("context") or {}).get("systems")
        text = f"job {job['id']} {job['status']}: {len(ok)} succeeded, {len(bad)} failed"
        if isinstance(total, int):
            if total > len(hosts):
                text += f", {total - len(hosts)} with no result"
            text += f" (of {total} systems)"
        lines.append(Text(text, style="bold"))
    elif not hosts:
        mark = ("✔ ", "bold green") if job["status"] == "succeeded" else ("✗ ", "bold red")
        lines.append(Text.assemble(mark, _job_line(job)))
    return lines


# ---------------------------------------------------------------- renderers

_LEVEL_STYLE = {"error": "red", "critical": "bold red", "warning": "yellow", "debug": "dim"}
_STEP_MARK = {
    "succeeded": Text("✔", style="bold green"),
    "failed": Text("✗", style="bold red"),
    "cancelled": Text("✗", style="yellow"),
    "retrying": Text("↻", style="yellow"),
}


def local_time(text: str | None, pattern: str = "%H:%M:%S") -> str:
    """An API timestamp in the local time zone (``-`` when absent; as given when it is not one)."""
    if not text:
        return "-"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone().strftime(pattern)


class JsonLines:
    """One JSON line (or YAML document) per event, then the end line: for scripts."""

    def __init__(self, shape: OutputFormat) -> None:
        self.shape = shape

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def emit(self, item: dict[str, Any]) -> None:
        if self.shape is OutputFormat.yaml:
            text = yaml.safe_dump(item, sort_keys=False, allow_unicode=True, explicit_start=True)
        else:
            text = json.dumps(item, ensure_ascii=False) + "\n"
        sys.stdout.write(text)
        sys.stdout.flush()

    def event(self, event: dict[str, Any]) -> None:
        self.emit(event)

    def finish(self, job: dict[str, Any], hosts: dict[str, dict[str, Any]]) -> None:
        self.emit(
            {
                "kind": "end",
                "job_id": job["id"],
                "status": job["status"],
                "error": job.get("error"),
                "hosts": {h: r.get("status") for h, r in hosts.items()},
            }
        )
        for line in _summary_lines(job, hosts):
            stderr.print(line)


class LivePanel:
    """For a terminal: a live panel of the steps, with the log lines scrolling above it."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.status = job["status"]
        self.steps: dict[str, dict[str, Any]] = {}
        self.spinners: dict[str, Spinner] = {}
        self.lock = threading.Lock()
        self.width = 8
        self._steps_from(job)
        self.live = Live(console=stdout, get_renderable=self._render, refresh_per_second=10)

    def _steps_from(self, job: dict[str, Any]) -> None:
        for step in job.get("steps") or []:
            self.steps[step["name"]] = {
                "status": step["status"],
                "attempts": step.get("attempts") or 0,
                "max_attempts": step.get("max_attempts"),
                "error": step.get("error"),
            }
        self.width = max([self.width, *(len(name) for name in self.steps)])

    def __enter__(self) -> LivePanel:
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.stop()

    def _mark(self, name: str, status: str) -> Any:
        if status in _STEP_MARK:
            return _STEP_MARK[status]
        if status == "running":
            return self.spinners.setdefault(name, Spinner("dots", style="cyan"))
        return Text("·", style="dim")

    def _render(self) -> Any:
        with self.lock:
            table = Table(show_header=False, box=None, pad_edge=False, expand=False)
            table.add_column("mark", width=2, no_wrap=True)
            table.add_column("step", no_wrap=True)
            table.add_column("status", no_wrap=True)
            table.add_column("attempt", no_wrap=True, style="dim")
            for name, step in self.steps.items():
                attempt = ""
                if step["attempts"]:
                    attempt = f"attempt {step['attempts']}" + (
                        f"/{step['max_attempts']}" if step.get("max_attempts") else ""
                    )
                table.add_row(self._mark(name, step["status"]), Text(name), Text(step["status"]), attempt)
            style = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(self.status, "cyan")
            title = f"job {self.job['id']} · {self.job['action']} · {self.status}"
            return Panel(table, title=title, title_align="left", border_style=style, expand=False)

    def event(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        changed = False
        with self.lock:
            if event.get("kind") == "step" and event.get("step"):
                step = self.steps.setdefault(event["step"], {"status": "pending", "attempts": 0})
                if data.get("status"):
                    step["status"] = data["status"]
                if data.get("attempt"):
                    step["attempts"] = data["attempt"]
                self.width = max(self.width, len(event["step"]))
                changed = True
            elif event.get("kind") == "job" and data.get("status"):
                self.status = data["status"]
                changed = True
        if changed:
            self.live.refresh()  # the panel printed under the line must already show the change
        level = str(event.get("level") or "info")
        style = _LEVEL_STYLE.get(level, "bold" if event.get("kind") == "job" else "")
        line = Table.grid(padding=(0, 1))  # a long message wraps under itself
        line.add_column(style="dim", no_wrap=True)
        line.add_column(style="cyan", no_wrap=True, min_width=self.width)
        line.add_column(overflow="fold")
        message = Text(str(event.get("message") or ""), style=style)
        line.add_row(local_time(event.get("time")), event.get("step") or "", message)
        self.live.console.print(line)

    def finish(self, job: dict[str, Any], hosts: dict[str, dict[str, Any]]) -> None:
        with self.lock:
            self._steps_from(job)
            self.status = job["status"]
        self.live.refresh()
        self.live.stop()
        for line in _summary_lines(job, hosts):
            stdout.print(line)


class JobFailed(CliError):
    """A followed job did not succeed; the request id printed is the one that started it."""

    def __init__(self, message: str, request_id: str | None) -> None:
        super().__init__(message)
        self.request_id = request_id


def follow(job: dict[str, Any], shape: OutputFormat) -> None:
    """Show a job's events until it ends, then per-host ✔/✗; raise unless it and all its systems succeeded."""
    api = client()
    live = shape is OutputFormat.table and stdout.is_terminal
    renderer: JsonLines | LivePanel = LivePanel(job) if live else JsonLines(shape)
    try:
        with renderer:
            for event in job_events(job["id"]):
                renderer.event(event)
            final = api.get_json(f"/jobs/{job['id']}")
            hosts = host_results(final)
            renderer.finish(final, hosts)
    except KeyboardInterrupt:
        hint = f"it goes on (stop it: armillary jobs cancel {job['id']})"
        stderr.print(Text(f"Stopped following job {job['id']}; {hint}."))
        raise typer.Exit(130) from None
    failed = _failed(hosts)
    if final["status"] != "succeeded":
        error = f": {final['error']}" if final.get("error") else ""
        raise JobFailed(f"job {final['id']} {final['status']}{error}", final.get("request_id"))
    if failed:  # a bulk job with on_failure=continue succeeds whatever its systems did
        message = f"job {final['id']} succeeded, but {len(failed)} of {len(hosts)} systems failed: "
        raise JobFailed(message + ", ".join(failed), final.get("request_id"))

"""Jobs: lifecycle actions on systems, bulk jobs, following a job live, and schedules.

* ``armillary system ACTION HOST`` (create, provision, deploy, destroy, stage, stop, start, reload;
  ``clone HOST NEWHOST``) starts the action and prints the job; ``--wait`` follows it live.
* ``armillary jobs list|show|cancel|start|watch``; ``armillary schedule list|show|create|delete``.

Following a job (``jobs watch``, ``--wait``) reads its Server-Sent Events. On a terminal, with the
table output, a live panel shows the steps (✔ done, ✗ failed, a spinner while running, the
attempt) and the log lines scroll above it. Otherwise (stdout not a terminal, or ``-o json``),
every event is one JSON line (``-o yaml``: one YAML document), then a last ``{"kind": "end"}``
line with the job's final status and per-host results, so scripts can consume the stream; the
human summary then goes to stderr. A dropped connection is resumed from the last event seen
(``Last-Event-ID``), so no event is shown twice or lost. The exit code is 0 when the job
succeeded, 1 when it failed or was cancelled (or, for a bulk job, when any of its systems failed).
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.live import Live
from rich.panel import Panel
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from armillary.cli.client import ApiError, CliError, _problem_of, _reason, ref_path
from armillary.cli.common import (
    AllOpt,
    LimitOpt,
    OutputOpt,
    client,
    command,
    delete_command,
    fmt,
    list_command,
    list_pages,
    parse_pairs,
    show_command,
)
from armillary.cli.output import (
    Column,
    OutputFormat,
    field,
    note,
    print_items,
    print_object,
    stderr,
    stdout,
)
from armillary.cli.resources import (
    SYSTEM_REF_HELP,
    IdempotencyKeyOpt,
    ParamOpt,
    QueueOpt,
    WaitOpt,
    system_app,
)

BULK_ACTIONS = ("create", "provision", "deploy", "destroy", "stage", "stop", "start", "reload")

RECONNECT_ATTEMPTS = 5  # in a row, without an event in between
RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 8.0

# `system ACTION HOST`; `system create` is in resources.py (it also defines systems), `clone` below.
ACTION_HELP = {
    "provision": "Provision a system: run its type's provisioner on the machine.",
    "deploy": "Deploy to a ready system (e.g. --param release=v2).",
    "destroy": "Destroy a system's machine (the record stays, state `destroyed`).",
    "stage": "Create and provision a system in one job.",
    "stop": "Stop a system's machine.",
    "start": "Start a stopped system's machine.",
    "reload": "Destroy and re-create a system's machine (and provision it again if it was).",
}


# ================================================================ starting and following jobs


def _job_line(job: dict[str, Any]) -> str:
    return f"job {job['id']} {job['status']}: {job['action']}"


def _print_started(job: dict[str, Any], what: str, output: OutputFormat) -> None:
    """A job just accepted: the job itself for scripts, its id and status for people."""
    if output is not OutputFormat.table:
        print_object(job, output)
        return
    shown = {"id": job["id"], "action": job["action"], "target": what, "status": job["status"]}
    if job.get("waiting_for_lock"):
        shown["waiting_for_lock"] = True
    print_object(shown, output)
    stderr.print(Text(f"Follow it with: armillary jobs watch {job['id']}", style="dim"))


def _post_job(path: str, body: dict[str, Any], params: Any, idempotency_key: str | None) -> dict[str, Any]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return client().request("POST", path, json=body, params=params, headers=headers).json()


def start_action(
    ref: str,
    action: str,
    param: list[str] | None,
    *,
    queue: bool,
    idempotency_key: str | None,
    wait: bool,
    output: OutputFormat | None,
    hostname: str | None = None,
) -> None:
    """``POST /systems/{ref}/actions``; print the job, or follow it to its end with ``wait``."""
    body: dict[str, Any] = {"action": action, "params": parse_pairs(param, "--param")}
    if hostname is not None:
        body["hostname"] = hostname
    try:
        job = _post_job(
            f"/systems/{ref_path(ref)}/actions", body, {"queue": "true"} if queue else None, idempotency_key
        )
    except ApiError as error:
        if error.status == 404 and action == "create":
            error.notes.append(
                "To define a new system, give its --env (and --hypervisor, ...): "
                "see `armillary system create --help`."
            )
        raise
    shape = fmt(output)
    if wait:
        follow(job, shape)
    else:
        _print_started(job, ref if hostname is None else f"{ref} → {hostname}", shape)


def _action_command(action: str) -> Callable[..., None]:
    def run(
        ref: Annotated[str, typer.Argument(help=SYSTEM_REF_HELP, metavar="HOST")],
        param: ParamOpt = None,
        queue: QueueOpt = False,
        idempotency_key: IdempotencyKeyOpt = None,
        wait: WaitOpt = False,
        output: OutputOpt = None,
    ) -> None:
        start_action(
            ref, action, param, queue=queue, idempotency_key=idempotency_key, wait=wait, output=output
        )

    run.__name__ = f"system_{action}"
    run.__doc__ = (
        f"{ACTION_HELP[action]}\n\nStarts a job and prints it (id, status); --wait follows it live "
        f"(like `armillary jobs watch`) and exits 0 if it succeeded, 1 if it failed or was cancelled."
    )
    return run


def system_clone(
    ref: Annotated[str, typer.Argument(help="The system to copy: id or hostname", metavar="HOST")],
    new_hostname: Annotated[str, typer.Argument(help="The copy's hostname", metavar="NEWHOST")],
    param: ParamOpt = None,
    queue: QueueOpt = False,
    idempotency_key: IdempotencyKeyOpt = None,
    wait: WaitOpt = False,
    output: OutputOpt = None,
) -> None:
    """Copy a system under a new hostname and create the copy's machine (provisioned like the source)."""
    start_action(
        ref,
        "clone",
        param,
        queue=queue,
        idempotency_key=idempotency_key,
        wait=wait,
        output=output,
        hostname=new_hostname,
    )


def register_system_actions(app: typer.Typer) -> None:
    """``system provision|deploy|...|reload|clone`` (``system create`` starts its action itself)."""
    for action in ACTION_HELP:
        command(app, action)(_action_command(action))
    command(app, "clone")(system_clone)


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
                    error = ApiError(response.status_code, _problem_of(response), api.request_id)
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
            reason = _reason(exc)
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


def _local(text: str | None, pattern: str = "%H:%M:%S") -> str:
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
        line.add_row(_local(event.get("time")), event.get("step") or "", message)
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


# ================================================================ jobs

jobs_app = typer.Typer(
    help="Jobs: lifecycle actions running on systems. Follow one live with `armillary jobs watch ID`.",
    no_args_is_help=True,
)
JobIdArg = Annotated[int, typer.Argument(help="Job id", metavar="ID", min=1)]


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


def _duration(item: dict[str, Any]) -> str:
    start, end = item.get("started_at"), item.get("finished_at")
    if not start:
        return "-"
    try:
        began = datetime.fromisoformat(start)
        ended = datetime.fromisoformat(end) if end else datetime.now(began.tzinfo or timezone.utc)
    except ValueError:
        return "-"
    seconds = max((ended - began).total_seconds(), 0.0)
    text = f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return text if end else text + "…"


JOB_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("ACTION", field("action")),
    ("STATUS", field("status")),
    ("SYSTEM", field("system_id")),
    ("PARENT", field("parent_id")),
    ("CREATED", lambda j: _local(j.get("created_at"), "%Y-%m-%d %H:%M:%S")),
    ("DURATION", _duration),
    ("ERROR", field("error")),
]
STEP_COLUMNS: list[Column] = [
    ("STEP", field("name")),
    ("STATUS", field("status")),
    ("ATTEMPTS", lambda s: f"{s.get('attempts')}/{s.get('max_attempts')}"),
    ("DURATION", _duration),
    ("ERROR", field("error")),
]


def _system_id(ref: str) -> str:
    """The jobs API filters by system id: look a hostname up."""
    if ref.isdigit():
        return ref
    return str(client().get_json(f"/systems/{ref_path(ref)}")["id"])


@command(jobs_app, "list")
def jobs_list(
    status: Annotated[JobStatus | None, typer.Option("--status", help="Only this status")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Only this action")] = None,
    system: Annotated[str | None, typer.Option("--system", help="Only this system (id or hostname)")] = None,
    parent: Annotated[int | None, typer.Option("--parent", help="Only the children of this bulk job")] = None,
    limit: LimitOpt = None,
    every: AllOpt = False,
    output: OutputOpt = None,
) -> None:
    """List jobs, newest first: `armillary jobs list --status failed --system web1`."""
    params = [(k, v) for k, v in (("status", status.value if status else None), ("action", action)) if v]
    if system:
        params.append(("system", _system_id(system)))
    if parent is not None:
        params.append(("parent", str(parent)))
    list_pages("/jobs", params, limit, every, JOB_COLUMNS, output, "jobs")


@command(jobs_app, "show")
def jobs_show(job_id: JobIdArg, output: OutputOpt = None) -> None:
    """Show a job: its fields, context and summary, and a table of its steps."""
    job = client().get_json(f"/jobs/{job_id}")
    shape = fmt(output)
    print_object(job, shape, skip=("steps",))
    if shape is OutputFormat.table:
        stdout.print()
        print_items(job.get("steps") or [], STEP_COLUMNS, shape, empty="No steps.")


@command(jobs_app, "cancel")
def jobs_cancel(job_id: JobIdArg, output: OutputOpt = None) -> None:
    """Cancel a job: it stops at the next step boundary (completed steps with an undo are undone)."""
    job = client().post_json(f"/jobs/{job_id}/cancel", None)
    shape = fmt(output)
    if shape is not OutputFormat.table:
        print_object(job, shape)
        return
    note(f"Cancel requested for job {job['id']}: it stops at its next step boundary.", shape)


@command(jobs_app, "watch")
def jobs_watch(job_id: JobIdArg, output: OutputOpt = None) -> None:
    """Follow a job live until it ends; exit 0 if it succeeded, 1 if it failed or was cancelled.

    On a terminal: a live panel of the steps and the log lines as they arrive. Otherwise, or with
    -o json: one JSON event per line, then {"kind": "end", "status": ..., "hosts": {...}}.
    """
    follow(client().get_json(f"/jobs/{job_id}"), fmt(output))


# ---------------------------------------------------------------- bulk job specs (jobs start, schedules)

SelectorLabelOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--label", "-l", metavar="KEY=VALUE", help="Systems with label key=value; repeat to require several."
    ),
]
SelectorEnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Systems of this environment")]
SelectorTypeOpt = Annotated[str | None, typer.Option("--type", "-t", help="Systems of this type")]
SelectorStateOpt = Annotated[
    str | None, typer.Option("--state", help="Systems in this state (ready, error…)")
]
SelectorSystemOpt = Annotated[
    list[str] | None,
    typer.Option("--system", metavar="HOST", help="This system (id or hostname); repeat."),
]
ConcurrencyOpt = Annotated[
    int | None, typer.Option("--concurrency", min=1, max=500, help="Systems at once (server default 10)")
]
BatchSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size", min=1, help="Systems per batch; batches run one after the other (default: one batch)"
    ),
]
ContinueOpt = Annotated[
    bool,
    typer.Option(
        "--continue-on-failure", help="Run every batch even after one had a failure (default: stop there)."
    ),
]


def _action(action: str) -> str:
    if action not in BULK_ACTIONS:
        raise typer.BadParameter(f"{action!r} is not one of {', '.join(BULK_ACTIONS)}", param_hint="ACTION")
    return action


def job_spec(
    action: str,
    *,
    label: list[str] | None,
    env: str | None,
    type_: str | None,
    state: str | None,
    system: list[str] | None,
    concurrency: int | None,
    batch_size: int | None,
    continue_on_failure: bool,
    param: list[str] | None,
) -> dict[str, Any]:
    """A bulk job spec; a selector with no criterion is refused (it would select every system)."""
    selector: dict[str, Any] = {}
    if label:
        selector["labels"] = parse_pairs(label, "--label", yaml_values=False)
    for key, value in (("environment", env), ("type", type_), ("state", state)):
        if value is not None:
            selector[key] = value
    if system:
        selector["systems"] = [int(s) if s.isdigit() else s for s in system]
    if not selector:
        raise typer.BadParameter("select the systems: give --label, --env, --type, --state or --system")
    spec: dict[str, Any] = {
        "action": _action(action),
        "selector": selector,
        "on_failure": "continue" if continue_on_failure else "stop",
        "params": parse_pairs(param, "--param"),
    }
    if concurrency is not None:
        spec["concurrency"] = concurrency
    if batch_size is not None:
        spec["batch_size"] = batch_size
    return spec


BulkActionArg = Annotated[
    str, typer.Argument(help="The action: " + ", ".join(BULK_ACTIONS), metavar="ACTION", show_default=False)
]


@command(jobs_app, "start")
def jobs_start(
    action: BulkActionArg,
    label: SelectorLabelOpt = None,
    env: SelectorEnvOpt = None,
    type_: SelectorTypeOpt = None,
    state: SelectorStateOpt = None,
    system: SelectorSystemOpt = None,
    concurrency: ConcurrencyOpt = None,
    batch_size: BatchSizeOpt = None,
    continue_on_failure: ContinueOpt = False,
    param: ParamOpt = None,
    idempotency_key: IdempotencyKeyOpt = None,
    wait: WaitOpt = False,
    output: OutputOpt = None,
) -> None:
    """Run an action on every system matching the selection (criteria combine with AND).

    `armillary jobs start stage --label cell=c1 --env prod --batch-size 10 --wait`
    """
    spec = job_spec(
        action,
        label=label,
        env=env,
        type_=type_,
        state=state,
        system=system,
        concurrency=concurrency,
        batch_size=batch_size,
        continue_on_failure=continue_on_failure,
        param=param,
    )
    job = _post_job("/jobs", spec, None, idempotency_key)
    shape = fmt(output)
    if wait:
        follow(job, shape)
        return
    count = (job.get("context") or {}).get("systems")
    _print_started(job, f"{count} systems" if isinstance(count, int) else "selection", shape)


# ================================================================ schedules

schedule_app = typer.Typer(
    help="Schedules: cron expressions that start bulk jobs (e.g. a nightly stage of a label).",
    no_args_is_help=True,
)


def _selector_text(selector: dict[str, Any]) -> str:
    """``cell=c1, environment=prod, systems=web1,web2``: the criteria that are set."""
    parts = [f"{k}={v}" for k, v in (selector.get("labels") or {}).items()]
    for key in ("environment", "type", "state"):
        if selector.get(key) is not None:
            parts.append(f"{key}={selector[key]}")
    if selector.get("systems"):
        parts.append("systems=" + ",".join(str(s) for s in selector["systems"]))
    return ", ".join(parts) or "-"


SCHEDULE_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("CRON", field("cron")),
    ("TZ", field("timezone")),
    ("ACTION", field("job.action")),
    ("SELECTOR", lambda s: _selector_text((s.get("job") or {}).get("selector") or {})),
    ("ENABLED", field("enabled")),
    ("NEXT RUN", lambda s: _local(s.get("next_run_at"), "%Y-%m-%d %H:%M")),
    ("LAST JOB", field("last_job_id")),
]

list_command(schedule_app, "/schedules", SCHEDULE_COLUMNS, "schedules", "List schedules.")
show_command(
    schedule_app, "/schedules", "Show a schedule with its job spec and next run.", ref_metavar="NAME"
)


@command(schedule_app, "create")
def schedule_create(
    name: Annotated[str, typer.Argument(help="Name", metavar="NAME")],
    cron: Annotated[str, typer.Option("--cron", help="Five-field cron expression, e.g. '0 3 * * *'")],
    action: Annotated[str, typer.Option("--action", help="The action: " + ", ".join(BULK_ACTIONS))],
    tz: Annotated[
        str | None,
        typer.Option("--tz", help="Time zone of the cron expression, e.g. Europe/Paris (default UTC)"),
    ] = None,
    label: SelectorLabelOpt = None,
    env: SelectorEnvOpt = None,
    type_: SelectorTypeOpt = None,
    state: SelectorStateOpt = None,
    system: SelectorSystemOpt = None,
    concurrency: ConcurrencyOpt = None,
    batch_size: BatchSizeOpt = None,
    continue_on_failure: ContinueOpt = False,
    param: ParamOpt = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled")] = False,
    output: OutputOpt = None,
) -> None:
    """Start a bulk job on a schedule (the selection is resolved at each run).

    `armillary schedule create nightly --cron "0 3 * * *" --action stage --label cell=c1`
    """
    spec = job_spec(
        action,
        label=label,
        env=env,
        type_=type_,
        state=state,
        system=system,
        concurrency=concurrency,
        batch_size=batch_size,
        continue_on_failure=continue_on_failure,
        param=param,
    )
    body: dict[str, Any] = {"name": name, "cron": cron, "job": spec, "enabled": not disabled}
    if tz is not None:
        body["timezone"] = tz
    print_object(client().post_json("/schedules", body), fmt(output))


delete_command(
    schedule_app,
    "/schedules",
    "schedule",
    "Delete a schedule (jobs it started are kept).",
    ref_metavar="NAME",
)


def register(app: typer.Typer) -> None:
    register_system_actions(system_app)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(schedule_app, name="schedule")

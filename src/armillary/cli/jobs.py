"""``armillary jobs``: list, show, cancel and follow jobs, and start bulk jobs over a selection.

``job_spec`` (with ``BULK_ACTIONS`` and the selector options) builds the bulk job spec that
``jobs start`` sends and that a schedule carries (schedules.py). Following a job is watch.py's;
starting one on a single system is actions.py's.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any

import typer

from armillary.cli.actions import IdempotencyKeyOpt, ParamOpt, WaitOpt, post_job, print_started
from armillary.cli.client import ref_path
from armillary.cli.common import AllOpt, LimitOpt, OutputOpt, client, command, fmt, list_pages, parse_pairs
from armillary.cli.output import Column, OutputFormat, field, note, print_items, print_object, stdout
from armillary.cli.watch import follow, local_time

BULK_ACTIONS = ("create", "provision", "deploy", "destroy", "stage", "stop", "start", "reload")

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
    ("CREATED", lambda j: local_time(j.get("created_at"), "%Y-%m-%d %H:%M:%S")),
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
    job = post_job("/jobs", spec, None, idempotency_key)
    shape = fmt(output)
    if wait:
        follow(job, shape)
        return
    count = (job.get("context") or {}).get("systems")
    print_started(job, f"{count} systems" if isinstance(count, int) else "selection", shape)


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")

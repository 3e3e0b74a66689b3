"""``armillary schedule``: cron expressions that start bulk jobs, over /api/v1/schedules.

The job a schedule starts is the spec of ``jobs start`` (``job_spec`` in jobs.py).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli.actions import ParamOpt
from armillary.cli.common import OutputOpt, client, command, delete_command, fmt, list_command, show_command
from armillary.cli.jobs import (
    BULK_ACTIONS,
    BatchSizeOpt,
    ConcurrencyOpt,
    ContinueOpt,
    SelectorEnvOpt,
    SelectorLabelOpt,
    SelectorStateOpt,
    SelectorSystemOpt,
    SelectorTypeOpt,
    job_spec,
)
from armillary.cli.output import Column, field, print_object
from armillary.cli.watch import local_time

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
    ("NEXT RUN", lambda s: local_time(s.get("next_run_at"), "%Y-%m-%d %H:%M")),
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
    app.add_typer(schedule_app, name="schedule")

"""``armillary audit`` (admins): the trail of every API request, a resource's history, and retention.

``armillary audit`` lists the trail (filters as options), ``armillary audit --resource system:42``
one resource's history with what each request changed, ``armillary audit prune --before DATE``
deletes the rows older than DATE through the API, so the prune is itself audited (who, which range,
how many). The server refuses a DATE in the future, and one less than 30 days ago unless --force.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Any

import typer

from armillary.cli.auth import when
from armillary.cli.common import AllOpt, LimitOpt, OutputOpt, client, command, fmt, handles_errors, list_pages
from armillary.cli.output import Column, OutputFormat, field, note, print_object

audit_app = typer.Typer(
    help="The audit trail (admins): every API request, who made it, how it ended and what it changed.",
)


class Outcome(str, Enum):
    success = "success"
    refused = "refused"
    failed = "failed"


def _changes(event: dict[str, Any]) -> str:
    """``systems:42 update cpu,memory_mb``: what a row changed, one resource per line."""
    lines = []
    for change in event.get("changes") or []:
        names = ",".join(change.get("fields") or {}) or "-"
        lines.append(f"{change['resource_type']}:{change['resource_id']} {change['op']} {names}")
    return "\n".join(lines) or "-"


AUDIT_COLUMNS: list[Column] = [
    ("TIME", lambda e: when(e.get("at"))),
    ("USER", field("username")),
    ("METHOD", field("method")),
    ("PATH", field("path")),
    ("STATUS", field("status")),
    ("OUTCOME", field("outcome")),
    ("REQUEST ID", field("request_id")),
    ("CHANGES", _changes),
]


@audit_app.callback(invoke_without_command=True)
@handles_errors
def audit(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this username")] = None,
    resource: Annotated[
        str | None,
        typer.Option("--resource", "-r", help="KIND:ID, e.g. system:42: that resource's history", metavar="KIND:ID"),
    ] = None,
    resource_type: Annotated[
        str | None, typer.Option("--resource-type", help="e.g. systems, environments, users, auth")
    ] = None,
    resource_id: Annotated[str | None, typer.Option("--resource-id", help="Id (or name) in the path")] = None,
    outcome: Annotated[
        Outcome | None, typer.Option("--outcome", help="refused: 4xx answers, failed: 5xx", show_default=False)
    ] = None,
    method: Annotated[str | None, typer.Option("--method", help="HTTP method, e.g. DELETE")] = None,
    request_id: Annotated[str | None, typer.Option("--request-id", help="One request (from an error)")] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 time, inclusive", metavar="TIME")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 time, exclusive", metavar="TIME")] = None,
    limit: LimitOpt = None,
    every: AllOpt = False,
    output: OutputOpt = None,
) -> None:
    """The audit trail (admins): every API request, who made it, how it ended and what it changed, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    filters = (("user", user), ("resource", resource), ("resource_type", resource_type),
               ("resource_id", resource_id), ("outcome", outcome.value if outcome else None), ("method", method),
               ("request_id", request_id), ("since", since), ("until", until))
    params = [(key, value) for key, value in filters if value]
    list_pages("/audit", params, limit, every, AUDIT_COLUMNS, output, "audit events")


def _moment(text: str) -> str:
    """A date (midnight UTC) or an ISO 8601 time (UTC when it names no zone), as the API wants it."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter("not a date (2025-01-31) or an ISO 8601 time", param_hint="--before") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()


@command(audit_app, "prune")
def prune(
    before: Annotated[str, typer.Option("--before", help="Delete the rows written before this date or time (UTC)",
                                        metavar="DATE")],
    force: Annotated[bool, typer.Option("--force", help="Allow a DATE less than the minimum age (30 days) ago")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted")] = False,
    output: OutputOpt = None,
) -> None:
    """Delete the audit rows older than DATE (retention); the prune itself is recorded in the trail."""
    body = {"before": _moment(before), "force": force, "dry_run": dry_run}
    result = client().post_json("/audit/prune", body)
    shape = fmt(output)
    if shape is not OutputFormat.table:
        print_object(result, shape)
        return
    verb = "Would delete" if dry_run else "Deleted"
    span = f" (from {when(result.get('oldest'))} to {when(result.get('newest'))})" if result.get("events") else ""
    note(f"{verb} {result['events']} audit rows written before {when(result['before'])}{span}.", shape)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")

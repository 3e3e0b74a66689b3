"""``armillary check``, ``armillary audits``, ``armillary remediate`` and ``armillary attention``: checks over
the fleet, audit runs and their findings, repairs in batches, and the queue of what they could not repair,
over /api/v1/checks, /audits, /findings, /remediations and /attention.

(``armillary audit`` — singular — is the audit *trail*: who did what.)

``audits run NAME --wait`` and ``remediate run NAME --wait`` follow the run's job live (``cli/watch.py``) and
then print the run's outcome; a run that waits for approval says so and who may approve it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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
    load_mapping,
    show_command,
)
from armillary.cli.output import Column, OutputFormat, field, note, print_items, print_object
from armillary.cli.watch import follow

check_app = typer.Typer(help="Checks: what to verify on a system (command, ansible, facts, machine_drift).",
                        no_args_is_help=True)
audits_app = typer.Typer(help="Audits: checks over a selection of systems, their runs and findings.",
                         no_args_is_help=True)
remediate_app = typer.Typer(help="Remediations: the fix of a check, run over the systems failing it.",
                            no_args_is_help=True)
attention_app = typer.Typer(help="The attention queue: systems the fixes could not repair.", no_args_is_help=True)

WaitOpt = Annotated[bool, typer.Option("--wait", "-w", help="Follow the run's job live until it ends")]
SpecOpt = Annotated[Path | None, typer.Option("--spec", help="The spec as a YAML or JSON file")]

CHECK_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("KIND", field("kind")), ("SEVERITY", field("severity")),
    ("TAGS", lambda c: ",".join(c.get("tags") or [])), ("DESCRIPTION", field("description")),
]
AUDIT_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("CHECKS", lambda a: ",".join(c["name"] for c in a["checks"])),
    ("LAST RUN", lambda a: (a.get("last_run") or {}).get("id")),
    ("PASS RATE", lambda a: _rate((a.get("last_run") or {}).get("counts"))),
]
RUN_COLUMNS: list[Column] = [
    ("RUN", field("id")), ("JOB", field("job_id")), ("STATUS", field("status")), ("SYSTEMS", field("systems")),
    ("PASS RATE", lambda r: _rate(r.get("counts"))),
    ("NEW FAIL", lambda r: (r.get("counts") or {}).get("new_failures")),
    ("FIXED", lambda r: (r.get("counts") or {}).get("fixed")), ("STARTED", field("started_at")),
]
FINDING_COLUMNS: list[Column] = [
    ("ID", field("id")), ("SYSTEM", field("system.name")), ("CHECK", field("check.name")),
    ("STATUS", field("status")), ("CHANGE", field("change")), ("SUMMARY", field("summary")),
    ("MS", field("duration_ms")), ("AT", field("started_at")),
]
FIX_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("CHECK", field("check.name")), ("KIND", field("kind")),
    ("MAX FAILURES", field("max_failures")), ("BATCH", field("batch_size")),
]
ITEM_COLUMNS: list[Column] = [
    ("ID", field("id")), ("SYSTEM", field("system.name")), ("CHECK", field("check.name")),
    ("STATUS", field("status")), ("ASSIGNEE", field("assignee")), ("REASON", field("reason")),
    ("SINCE", field("created_at")),
]


def _rate(counts: dict[str, Any] | None) -> str:
    rate = (counts or {}).get("pass_rate")
    return "" if rate is None else f"{rate * 100:.1f}%"


# ---------------------------------------------------------------- checks

list_command(check_app, "/checks", CHECK_COLUMNS, "checks", "List checks.")
show_command(check_app, "/checks", "Show a check with its spec.", ref_metavar="CHECK")
delete_command(check_app, "/checks", "check", "Delete a check (and its findings).", ref_metavar="CHECK")


@command(check_app, "create")
def check_create(
    name: Annotated[str, typer.Argument(help="Name", metavar="NAME")],
    kind: Annotated[str, typer.Option("--kind", help="command, ansible, facts or machine_drift")],
    spec: SpecOpt = None,
    run: Annotated[str | None, typer.Option("--command", help="Shell line of a command check")] = None,
    expect: Annotated[list[str] | None, typer.Option("--expect", help="Facts expression, or the output "
                                                                      "pattern of a command check; repeat")] = None,
    severity: Annotated[str, typer.Option("--severity", help="info, low, medium, high, critical")] = "medium",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag; repeat")] = None,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    output: OutputOpt = None,
) -> None:
    """Create a check: `armillary check create sshd --kind command --command 'pgrep -x sshd'`,
    `armillary check create os --kind facts --expect 'facts.os.version == vars.os_version'`."""
    body: dict[str, Any] = load_mapping(spec, "spec") if spec else {}
    if run:
        body["command"] = run
    if expect and kind == "facts":
        body["expect"] = list(expect)
    elif expect:
        body["expect_pattern"] = expect[0]
    print_object(client().post_json("/checks", {"name": name, "kind": kind, "spec": body, "severity": severity,
                                                "tags": tag or [], "description": description}), fmt(output))


# ---------------------------------------------------------------- audits

list_command(audits_app, "/audits", AUDIT_COLUMNS, "audits", "List audits with their last pass rate.")
delete_command(audits_app, "/audits", "audit", "Delete an audit (its runs and findings too).", ref_metavar="AUDIT")


@command(audits_app, "create")
def audit_create(
    name: Annotated[str, typer.Argument(help="Name", metavar="NAME")],
    check: Annotated[list[str], typer.Option("--check", help="Check name or id; repeat (in order)")],
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="KEY=VALUE the systems have; repeat")] = None,
    environment: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only systems of this type")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Systems per batch")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Systems checked at once")] = 10,
    output: OutputOpt = None,
) -> None:
    """Create an audit: `armillary audits create web-baseline --check sshd --check os -l tier=web`."""
    labels = dict(item.split("=", 1) for item in label or [] if "=" in item)
    selector = {k: v for k, v in (("labels", labels), ("environment", environment), ("type", type_)) if v}
    body = {"name": name, "checks": check, "selector": selector, "batch_size": batch_size, "concurrency": concurrency}
    print_object(client().post_json("/audits", {k: v for k, v in body.items() if v is not None}), fmt(output))


@command(audits_app, "run")
def audit_run(audit: Annotated[str, typer.Argument(help="Audit name or id", metavar="AUDIT")],
              wait: WaitOpt = False, output: OutputOpt = None) -> None:
    """Run an audit now (a job); with --wait follow it live, then print its pass rate and what changed."""
    api = client()
    run = api.post_json(f"/audits/{audit}/runs", {})
    shape = fmt(output)
    if not wait:
        print_object(run, shape)
        return
    try:
        follow(api.get_json(f"/jobs/{run['job_id']}"), shape)
    finally:
        _print_summary(audit, run["id"], shape)


def _print_summary(audit: str, run_id: int, shape: OutputFormat) -> None:
    summary = client().get_json(f"/audits/{audit}/summary", params={"run": run_id})
    if shape is not OutputFormat.table:
        print_object(summary, shape)
        return
    counts = summary.get("counts") or {}
    note(f"run {run_id}: pass rate {_rate(counts)} ({counts.get('pass', 0)} pass, {counts.get('fail', 0)} fail, "
         f"{counts.get('error', 0)} error); {counts.get('new_failures', 0)} new failures, "
         f"{counts.get('fixed', 0)} fixed", shape)
    for title, rows in (("New failures", summary["new_failures"]), ("Fixed", summary["fixed"])):
        if rows:
            note(f"{title}:", shape)
            print_items(rows, FINDING_COLUMNS, shape)


@command(audits_app, "show")
def audit_show(audit: Annotated[str, typer.Argument(help="Audit name or id", metavar="AUDIT")],
               run: Annotated[int | None, typer.Option("--run", help="This run (default: the latest)")] = None,
               output: OutputOpt = None) -> None:
    """An audit, its recent runs (pass rate over time), and the latest run's new failures and fixes."""
    shape = fmt(output)
    api = client()
    print_object(api.get_json(f"/audits/{audit}"), shape, skip=("last_run",))
    print_items(api.get_json(f"/audits/{audit}/runs", params={"limit": 20})["items"], RUN_COLUMNS, shape,
                empty="No runs yet.")
    latest = run or (api.get_json(f"/audits/{audit}").get("last_run") or {}).get("id")
    if latest:
        _print_summary(audit, latest, shape)


@command(audits_app, "schedule")
def audit_schedule(
    audit: Annotated[str, typer.Argument(help="Audit name or id", metavar="AUDIT")],
    cron: Annotated[str | None, typer.Option("--cron", help="Five-field cron, e.g. '0 3 * * *'")] = None,
    timezone: Annotated[str, typer.Option("--timezone", help="Time zone of the cron")] = "UTC",
    disable: Annotated[bool, typer.Option("--disable", help="Keep the schedule, do not fire it")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the schedule")] = False,
    output: OutputOpt = None,
) -> None:
    """Run an audit on a schedule (one run per tick, whatever the number of servers); without options, show it."""
    api = client()
    if remove:
        api.delete(f"/audits/{audit}/schedule")
        note(f"Removed the schedule of audit {audit}.", fmt(output))
        return
    if cron is None:
        print_object(api.get_json(f"/audits/{audit}/schedule"), fmt(output))
        return
    body = {"cron": cron, "timezone": timezone, "enabled": not disable}
    print_object(api.request("PUT", f"/audits/{audit}/schedule", json=body).json(), fmt(output))


@command(audits_app, "findings")
def audit_findings(
    audit: Annotated[str | None, typer.Argument(help="Audit name or id (default: every audit)",
                                                metavar="AUDIT")] = None,
    system: Annotated[str | None, typer.Option("--system", help="System id or hostname (its history)")] = None,
    check: Annotated[str | None, typer.Option("--check", help="Check name or id")] = None,
    run: Annotated[int | None, typer.Option("--run", help="Audit run id")] = None,
    status: Annotated[str | None, typer.Option("--status", help="pass, fail or error")] = None,
    change: Annotated[str | None, typer.Option("--change", help="new_failure, fixed, still_failing...")] = None,
    limit: LimitOpt = None, every: AllOpt = False, output: OutputOpt = None,
) -> None:
    """Findings newest first: `armillary audits findings --system web1 --check sshd` is when it started and
    stopped failing."""
    params = [(k, str(v)) for k, v in (("audit", audit), ("system", system), ("check", check), ("run", run),
                                        ("status", status), ("change", change)) if v]
    list_pages("/findings", params, limit, every, FINDING_COLUMNS, output, "findings")


@command(audits_app, "compliance")
def audit_compliance(system: Annotated[str, typer.Argument(help="System id or hostname", metavar="SYSTEM")],
                     output: OutputOpt = None) -> None:
    """A system's latest finding of every check; exits 1 unless all pass."""
    report = client().get_json(f"/findings/compliance/{system}")
    shape = fmt(output)
    if shape is not OutputFormat.table:
        print_object(report, shape)
    else:
        print_items(report["checks"], FINDING_COLUMNS, shape, empty="No findings yet.")
        if report["attention"]:
            note("Needs attention:", shape)
            print_items(report["attention"], ITEM_COLUMNS, shape)
    if not report["compliant"]:
        raise typer.Exit(1)


# ---------------------------------------------------------------- remediations

list_command(remediate_app, "/remediations", FIX_COLUMNS, "remediations", "List remediations.")
show_command(remediate_app, "/remediations", "Show a remediation.", ref_metavar="REMEDIATION")
delete_command(remediate_app, "/remediations", "remediation", "Delete a remediation.", ref_metavar="REMEDIATION")


@command(remediate_app, "create")
def fix_create(
    name: Annotated[str, typer.Argument(help="Name", metavar="NAME")],
    check: Annotated[str, typer.Option("--check", help="The check it fixes")],
    kind: Annotated[str, typer.Option("--kind", help="script, ansible or action")],
    spec: SpecOpt = None,
    script: Annotated[Path | None, typer.Option("--script", help="Script file (kind script)")] = None,
    action: Annotated[str | None, typer.Option("--action", help="reload, provision, start or recover")] = None,
    max_failures: Annotated[str | None, typer.Option("--max-failures", help="Stop after more: 3 or 10%")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency")] = 5,
    output: OutputOpt = None,
) -> None:
    """Create a remediation: `armillary remediate create fix-sshd --check sshd --kind action --action recover`."""
    body: dict[str, Any] = load_mapping(spec, "spec") if spec else {}
    if script is not None:
        body["script"] = script.read_text()
    if action:
        body["action"] = action
    request = {"name": name, "check": check, "kind": kind, "spec": body, "max_failures": max_failures,
               "batch_size": batch_size, "concurrency": concurrency}
    print_object(client().post_json("/remediations", {k: v for k, v in request.items() if v is not None}),
                 fmt(output))


@command(remediate_app, "run")
def fix_run(remediation: Annotated[str, typer.Argument(help="Remediation name or id", metavar="REMEDIATION")],
            system: Annotated[list[str] | None,
                              typer.Option("--system", help="Only this failing system; repeat")] = None,
            wait: WaitOpt = False, output: OutputOpt = None) -> None:
    """Fix the systems whose latest finding of the check fails, in batches; each is re-checked, and those still
    failing go to the attention queue."""
    api = client()
    run = api.post_json(f"/remediations/{remediation}/runs", {"systems": system} if system else {})
    _after_start(run, wait, fmt(output))


def _after_start(run: dict[str, Any], wait: bool, shape: OutputFormat) -> None:
    api = client()
    if run["status"] == "awaiting_approval":
        print_object(run, shape)
        note(f"Run {run['id']} waits for approval ({run.get('reason')}): another operator runs "
             f"`armillary remediate approve {run['id']}`.", shape)
        return
    if not wait:
        print_object(run, shape)
        return
    try:
        follow(api.get_json(f"/jobs/{run['job_id']}"), shape)
    finally:
        final = api.get_json(f"/remediations/runs/{run['id']}")
        rows = [{"hostname": r.get("hostname"), **r} for r in (final.get("results") or {}).values()]
        print_items(rows, [("SYSTEM", field("hostname")), ("OUTCOME", field("status")), ("WHY", field("reason"))],
                    shape, empty="No system handled.")


@command(remediate_app, "approve")
def fix_approve(run: Annotated[int, typer.Argument(help="Remediation run id", metavar="RUN")],
                wait: WaitOpt = False, output: OutputOpt = None) -> None:
    """Approve a run waiting for approval (not your own): its job starts."""
    _after_start(client().post_json(f"/remediations/runs/{run}/approve", {}), wait, fmt(output))


@command(remediate_app, "reject")
def fix_reject(run: Annotated[int, typer.Argument(help="Remediation run id", metavar="RUN")],
               reason: Annotated[str, typer.Option("--reason", help="Why")] = "",
               output: OutputOpt = None) -> None:
    """Reject a run waiting for approval."""
    print_object(client().post_json(f"/remediations/runs/{run}/reject", {"reason": reason}), fmt(output))


@command(remediate_app, "status")
def fix_status(run: Annotated[int, typer.Argument(help="Remediation run id", metavar="RUN")],
               output: OutputOpt = None) -> None:
    """A remediation run: who asked, who approved, and each system's outcome."""
    print_object(client().get_json(f"/remediations/runs/{run}"), fmt(output))


# ---------------------------------------------------------------- attention


@command(attention_app, "list")
def attention_list(
    status: Annotated[str, typer.Option("--status", help="unresolved, open, acknowledged or resolved")] = "unresolved",
    system: Annotated[str | None, typer.Option("--system", help="System id or hostname")] = None,
    assignee: Annotated[str | None, typer.Option("--assignee", help="Assigned to this user")] = None,
    limit: LimitOpt = None, every: AllOpt = False, output: OutputOpt = None,
) -> None:
    """The queue, newest first."""
    params = [(k, v) for k, v in (("status", status), ("system", system), ("assignee", assignee)) if v]
    list_pages("/attention", params, limit, every, ITEM_COLUMNS, output, "items needing attention")


show_command(attention_app, "/attention", "An item with its history.", ref_metavar="ITEM")


@command(attention_app, "assign")
def attention_assign(item: Annotated[int, typer.Argument(metavar="ITEM")],
                     user: Annotated[str | None, typer.Argument(help="User (none: unassign)", metavar="USER")] = None,
                     output: OutputOpt = None) -> None:
    """Assign an item to a user."""
    print_object(client().post_json(f"/attention/{item}/assign", {"assignee": user}), fmt(output))


@command(attention_app, "ack")
def attention_ack(item: Annotated[int, typer.Argument(metavar="ITEM")],
                  note_: Annotated[str, typer.Option("--note", help="A word on it")] = "",
                  output: OutputOpt = None) -> None:
    """Acknowledge an item: someone is on it."""
    print_object(client().post_json(f"/attention/{item}/ack", {"reason": note_}), fmt(output))


@command(attention_app, "comment")
def attention_comment(item: Annotated[int, typer.Argument(metavar="ITEM")],
                      text: Annotated[str, typer.Argument(metavar="TEXT")], output: OutputOpt = None) -> None:
    """Add a comment to an item's history."""
    print_object(client().post_json(f"/attention/{item}/comments", {"text": text}), fmt(output))


@command(attention_app, "resolve")
def attention_resolve(item: Annotated[int, typer.Argument(metavar="ITEM")],
                      resolution: Annotated[str, typer.Argument(help="What was done", metavar="RESOLUTION")],
                      output: OutputOpt = None) -> None:
    """Resolve an item, saying what was done."""
    print_object(client().post_json(f"/attention/{item}/resolve", {"resolution": resolution}), fmt(output))


def register(app: typer.Typer) -> None:
    app.add_typer(check_app, name="check")
    app.add_typer(audits_app, name="audits")
    app.add_typer(remediate_app, name="remediate")
    app.add_typer(attention_app, name="attention")

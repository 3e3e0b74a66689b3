"""``armillary stack``: declarative stacks over /api/v1/stacks. ``plan`` prints a Terraform-like coloured
plan (``+`` create, ``~`` update in place, ``-/+`` replace with the property forcing it and why, ``+/-``
when the new one is made before the old one is deleted, ``-`` delete); every operation prints its job and
``--wait`` follows it live; ``apply`` and ``converge`` take ``--rollback``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from armillary.cli.actions import IdempotencyKeyOpt, WaitOpt, post_job, print_started
from armillary.cli.client import ref_path
from armillary.cli.common import OutputOpt, client, command, fmt, list_command, parse_pairs, show_command
from armillary.cli.output import Column, OutputFormat, field, print_items, print_object, stdout
from armillary.cli.watch import follow

stack_app = typer.Typer(help="Stacks: templates of resources, planned then applied, checked for drift.",
                        no_args_is_help=True)

STACK_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("ENVIRONMENT", field("environment.name")),
    ("STATUS", field("status")), ("RESOURCES", field("resources")), ("SERIAL", field("serial")),
    ("JOB", field("running_job_id")),
]
RESOURCE_COLUMNS: list[Column] = [
    ("NAME", field("name")), ("TYPE", field("type")), ("PHYSICAL ID", field("physical_id")),
    ("STATUS", field("status")), ("DRIFT", lambda r: (r["drift"] or {}).get("state", "") or
                                  (", ".join(sorted((r["drift"] or {}).get("differing", {}))))),
]
EVENT_COLUMNS: list[Column] = [
    ("ID", field("id")), ("TIME", field("created_at")), ("RESOURCE", field("resource")),
    ("ACTION", field("action")), ("STATUS", field("status")), ("MESSAGE", field("message")),
]
SIGNS = {"create": ("+", "green"), "adopt": ("+", "cyan"), "update": ("~", "yellow"),
         "replace": ("-/+", "magenta"), "delete": ("-", "red"), "forget": ("-", "dim"), "no-op": (" ", "dim")}

TemplateArg = Annotated[Path, typer.Argument(help="Template file (YAML or JSON)", metavar="TEMPLATE",
                                             exists=True, dir_okay=False)]
ParamOpt = Annotated[list[str] | None, typer.Option("--parameter", "-p", help="KEY=VALUE (repeatable)")]
RollbackOpt = Annotated[bool, typer.Option(
    "--rollback", help="On failure, go back to the last template that applied successfully (none: delete "
                       "what the stack holds)")]


def _template(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _params(pairs: list[str] | None) -> dict[str, Any] | None:
    return parse_pairs(pairs, "--parameter") if pairs else None


def print_plan(plan: dict[str, Any], output: OutputFormat) -> None:
    """The plan as Terraform prints one: a sign and a colour per action, the reason of a replacement."""
    if output is not OutputFormat.table:
        print_object(plan, output)
        return
    for change in plan["changes"]:
        if change["action"] == "no-op":
            continue
        sign, colour = SIGNS.get(change["action"], ("?", "white"))
        if change.get("replace_policy") == "create_before_delete":
            sign = "+/-"
        line = Text(f"{sign:>3} ", style=f"bold {colour}") + Text(f"{change['resource']} ({change['type']})",
                                                                   style=colour)
        if change.get("fields") and change["action"] == "update":
            line += Text(f"  ~ {', '.join(change['fields'])}", style="yellow")
        if change["action"] == "replace":
            line += Text(f"  # forces replacement: {change.get('property')}: {change.get('reason')}"
                         + (" (create before delete)" if sign == "+/-" else ""), style="magenta")
        elif change.get("reason"):
            line += Text(f"  # {change['reason']}", style="dim")
        stdout.print(line)
    counts = plan["summary"]
    stdout.print(Text(f"Plan {plan['number']}: {counts.get('create', 0) + counts.get('adopt', 0)} to add, "
                      f"{counts.get('update', 0)} to change, {counts.get('replace', 0)} to replace, "
                      f"{counts.get('delete', 0) + counts.get('forget', 0)} to destroy, "
                      f"{counts.get('no-op', 0)} unchanged.", style="bold"))
    if plan.get("outputs"):
        stdout.print(Text("Outputs:", style="bold"))
        for name, value in plan["outputs"].items():
            stdout.print(f"  {name} = {json.dumps(value)}")


def _job(path: str, body: dict[str, Any] | None, what: str, key: str | None, wait: bool, output: Any,
         method: str = "POST") -> None:
    job = client().request("DELETE", path).json() if method == "DELETE" else post_job(path, body or {}, None, key)
    if wait:
        follow(job, fmt(output))
    else:
        print_started(job, what, fmt(output))


list_command(stack_app, "/stacks", STACK_COLUMNS, "stacks", "List stacks with their status.")
show_command(stack_app, "/stacks", "Show a stack: status, parameters (secrets hidden), outputs, drift.",
             ref_metavar="STACK")


@command(stack_app, "validate")
def stack_validate(template: TemplateArg, parameter: ParamOpt = None, output: OutputOpt = None) -> None:
    """Check a template (and parameters): every problem with its path. Nothing is stored."""
    body = {"template": _template(template), **({"parameters": _params(parameter)} if parameter else {})}
    print_object(client().post_json("/stacks/validate", body), fmt(output))


@command(stack_app, "create")
def stack_create(
    name: Annotated[str, typer.Argument(metavar="NAME")], template: TemplateArg,
    environment: Annotated[str, typer.Option("--env", help="Environment")],
    parameter: ParamOpt = None,
    parallelism: Annotated[int, typer.Option("--parallelism", help="Resources at once in a layer")] = 10,
    output: OutputOpt = None,
) -> None:
    """Define a stack (nothing is made): `armillary stack create app app.yaml --env dev -p image=nginx`"""
    body = {"name": name, "environment": environment, "template": _template(template),
            "parameters": _params(parameter) or {}, "parallelism": parallelism}
    print_object(client().post_json("/stacks", body), fmt(output))


@command(stack_app, "plan")
def stack_plan(
    stack: Annotated[str, typer.Argument(metavar="STACK")],
    template: Annotated[Path | None, typer.Option("--template", "-t", help="A new template", exists=True)] = None,
    parameter: ParamOpt = None, output: OutputOpt = None,
) -> None:
    """Store and print a plan: `+` create, `~` update in place, `-/+` replace (and why), `-` delete."""
    body: dict[str, Any] = {}
    if template is not None:
        body["template"] = _template(template)
    if parameter:
        body["parameters"] = _params(parameter)
    print_plan(client().post_json(f"/stacks/{ref_path(stack)}/plans", body), fmt(output))


@command(stack_app, "apply")
def stack_apply(
    stack: Annotated[str, typer.Argument(metavar="STACK")],
    plan: Annotated[int | None, typer.Option("--plan", help="Apply this stored plan (else plan now)")] = None,
    template: Annotated[Path | None, typer.Option("--template", "-t", help="A new template", exists=True)] = None,
    parameter: ParamOpt = None, rollback: RollbackOpt = False, idempotency_key: IdempotencyKeyOpt = None,
    wait: WaitOpt = False, output: OutputOpt = None,
) -> None:
    """Apply a stored plan (refused if the stack changed since), or plan and apply at once."""
    body: dict[str, Any] = {"plan": plan} if plan is not None else {}
    if template is not None:
        body["template"] = _template(template)
    if parameter:
        body["parameters"] = _params(parameter)
    if rollback:
        body["rollback"] = True
    _job(f"/stacks/{ref_path(stack)}/apply", body, stack, idempotency_key, wait, output)


def _operation(name: str, doc: str):
    def run(stack: Annotated[str, typer.Argument(metavar="STACK")], idempotency_key: IdempotencyKeyOpt = None,
            wait: WaitOpt = False, output: OutputOpt = None) -> None:
        _job(f"/stacks/{ref_path(stack)}/{name}", {}, stack, idempotency_key, wait, output)

    run.__doc__ = doc
    return run


command(stack_app, "check")(_operation("check", "Read every resource's actual state and record drift."))


@command(stack_app, "converge")
def stack_converge(stack: Annotated[str, typer.Argument(metavar="STACK")], rollback: RollbackOpt = False,
                   idempotency_key: IdempotencyKeyOpt = None, wait: WaitOpt = False,
                   output: OutputOpt = None) -> None:
    """Apply the stored template again: repair drift."""
    _job(f"/stacks/{ref_path(stack)}/converge", {"rollback": True} if rollback else {}, stack, idempotency_key,
         wait, output)


@command(stack_app, "delete")
def stack_delete(stack: Annotated[str, typer.Argument(metavar="STACK")], wait: WaitOpt = False,
                 output: OutputOpt = None) -> None:
    """Delete every resource in reverse dependency order, then the stack."""
    _job(f"/stacks/{ref_path(stack)}", None, stack, None, wait, output, method="DELETE")


@command(stack_app, "abandon")
def stack_abandon(stack: Annotated[str, typer.Argument(metavar="STACK")], output: OutputOpt = None) -> None:
    """Forget the stack and keep everything it made; prints its state."""
    print_object(client().post_json(f"/stacks/{ref_path(stack)}/abandon", {}), fmt(output))


@command(stack_app, "adopt")
def stack_adopt(
    name: Annotated[str, typer.Argument(metavar="NAME")], template: TemplateArg,
    environment: Annotated[str, typer.Option("--env", help="Environment")],
    resource: Annotated[list[str] | None, typer.Option("--resource", "-r",
                                                      help="RESOURCE=WHAT to adopt (repeatable)")] = None,
    abandoned: Annotated[Path | None, typer.Option("--from", help="The JSON `stack abandon -o json` printed",
                                                   exists=True, dir_okay=False)] = None,
    parameter: ParamOpt = None, idempotency_key: IdempotencyKeyOpt = None, wait: WaitOpt = False,
    output: OutputOpt = None,
) -> None:
    """Define a stack over things that exist and apply it: the named resources are adopted, not made."""
    adopted: dict[str, Any] = {}
    if abandoned is not None:
        state = json.loads(abandoned.read_text(encoding="utf-8"))
        adopted.update({r["name"]: r["physical_id"] for r in state.get("resources", [])
                        if r.get("physical_id") and "~" not in r["name"]})  # not the objects set apart
    adopted.update({k: str(v) for k, v in parse_pairs(resource, "--resource", yaml_values=False).items()})
    body = {"name": name, "environment": environment, "template": _template(template),
            "parameters": _params(parameter) or {}, "resources": adopted}
    _job("/stacks/adopt", body, name, idempotency_key, wait, output)


@command(stack_app, "resources")
def stack_resources(stack: Annotated[str, typer.Argument(metavar="STACK")], output: OutputOpt = None) -> None:
    """The stack's resources, with their physical ids, status and drift."""
    print_items(client().get_json(f"/stacks/{ref_path(stack)}/resources"), RESOURCE_COLUMNS, fmt(output))


@command(stack_app, "events")
def stack_events(stack: Annotated[str, typer.Argument(metavar="STACK")],
                 limit: Annotated[int, typer.Option("--limit")] = 100, output: OutputOpt = None) -> None:
    """What happened to the stack and its resources, oldest first."""
    items = client().get_json(f"/stacks/{ref_path(stack)}/events", params={"limit": limit})
    print_items(items, EVENT_COLUMNS, fmt(output))


@command(stack_app, "outputs")
def stack_outputs(stack: Annotated[str, typer.Argument(metavar="STACK")], output: OutputOpt = None) -> None:
    """The stack's outputs (secret ones shown as ******)."""
    print_object(client().get_json(f"/stacks/{ref_path(stack)}/outputs"), fmt(output))


@command(stack_app, "export")
def stack_export(stack: Annotated[str, typer.Argument(metavar="STACK")], output: OutputOpt = None) -> None:
    """The stack's template, non-secret parameters and resources."""
    print_object(client().get_json(f"/stacks/{ref_path(stack)}/export"), fmt(output))


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")

"""``armillary group``: label selectors that carry variables, and their member systems (/api/v1/groups)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli.client import ref_path
from armillary.cli.common import (
    AllOpt,
    DescriptionOpt,
    FileOpt,
    LimitOpt,
    NameArg,
    OutputOpt,
    RefArg,
    RenameOpt,
    UnsetVarOpt,
    VarOpt,
    command,
    delete_command,
    file_or_flags,
    list_command,
    list_pages,
    parse_pairs,
    show_command,
)
from armillary.cli.edits import Patch, flags_given, need, put_given, send_created
from armillary.cli.output import Column, field
from armillary.cli.systems import SYSTEM_COLUMNS

group_app = typer.Typer(
    help="Groups: label selectors that carry variables (a system is a member when it has "
    "every label of the selector).",
    no_args_is_help=True,
)
GROUP_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("SELECTOR", field("selector")),
    ("PRIORITY", field("priority")),
    ("DESCRIPTION", field("description")),
    ("VARIABLES", lambda g: len(g.get("variables") or {})),
]
SelectorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--selector",
        metavar="KEY=VALUE",
        help="Label key=value a member must carry; repeat (update: replaces the selector).",
        show_default=False,
    ),
]
PriorityOpt = Annotated[
    int | None,
    typer.Option("--priority", min=-1000, max=1000, help="Higher wins when two groups set one key"),
]

list_command(group_app, "/groups", GROUP_COLUMNS, "groups", "List groups.")
show_command(group_app, "/groups", "Show one group.")


@command(group_app, "systems")
def group_systems(
    ref: RefArg, limit: LimitOpt = None, every: AllOpt = False, output: OutputOpt = None
) -> None:
    """List the systems that are members of a group."""
    path = f"/groups/{ref_path(ref)}/systems"
    list_pages(path, [], limit, every, SYSTEM_COLUMNS, output, "member systems")


@command(group_app, "create")
def group_create(
    name: NameArg = None,
    selector: SelectorOpt = None,
    priority: PriorityOpt = None,
    description: DescriptionOpt = None,
    var: VarOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Create a group: `armillary group create frontend --selector tier=frontend --var log_level=warn`."""
    doc = file_or_flags(file, flags_given(name, selector, priority, description, var))
    body: dict[str, Any] = {}
    if doc is None:
        body = {
            "name": need(name, "NAME"),
            "selector": parse_pairs(need(selector, "--selector"), "--selector", yaml_values=False),
            "variables": parse_pairs(var, "--var"),
        }
        put_given(body, priority=priority, description=description)
    send_created("/groups", body, doc, output)


@command(group_app, "update")
def group_update(
    ref: RefArg,
    name: RenameOpt = None,
    selector: SelectorOpt = None,
    priority: PriorityOpt = None,
    description: DescriptionOpt = None,
    var: VarOpt = None,
    unset_var: UnsetVarOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Change a group; --selector replaces the selector, --var merges into its variables."""
    doc = file_or_flags(file, flags_given(name, selector, priority, description, var, unset_var))
    patch = Patch(f"/groups/{ref_path(ref)}")
    if doc is None:
        patch.merge("variables", var, unset_var, "--var")
        if selector:
            patch.body["selector"] = parse_pairs(selector, "--selector", yaml_values=False)
        patch.set(name=name, priority=priority, description=description)
    patch.send(doc, output)


delete_command(group_app, "/groups", "group", "Delete a group (its members keep their labels).")


def register(app: typer.Typer) -> None:
    app.add_typer(group_app, name="group")

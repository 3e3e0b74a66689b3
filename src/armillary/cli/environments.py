"""``armillary env``: environments (with ``lock``/``unlock``), over /api/v1/environments.

One module per resource group of the CLI (see edits.py for the create/update conventions); cli/main.py
registers each module's ``register``. A new resource goes in a module of its own, like this one.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli.client import ref_path
from armillary.cli.common import (
    AllOpt,
    DescriptionOpt,
    FileOpt,
    LimitOpt,
    OutputOpt,
    RefArg,
    RenameOpt,
    UnsetVarOpt,
    VarOpt,
    client,
    command,
    delete_command,
    file_or_flags,
    fmt,
    list_pages,
    parse_pairs,
    show_command,
)
from armillary.cli.edits import Patch, flags_given, need, put_given, send_created
from armillary.cli.output import Column, OutputFormat, dump, field, note

env_app = typer.Typer(
    help="Environments: isolated spaces (dev, qa, prod) with their hypervisors and variables.",
    no_args_is_help=True,
)
ENV_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("DESCRIPTION", field("description")),
    ("LOCKED", field("locked")),
    ("VARIABLES", lambda e: len(e.get("variables") or {})),
]
LockReasonOpt = Annotated[str | None, typer.Option("--lock-reason", help="Why it is locked")]


@command(env_app, "list")
def env_list(
    q: Annotated[str | None, typer.Option("--q", "-q", help="Name prefix")] = None,
    limit: LimitOpt = None,
    every: AllOpt = False,
    output: OutputOpt = None,
) -> None:
    """List environments."""
    list_pages("/environments", [("q", q)] if q else [], limit, every, ENV_COLUMNS, output, "environments")


show_command(env_app, "/environments", "Show one environment.")


@command(env_app, "create")
def env_create(
    name: Annotated[
        str | None, typer.Argument(help="Name (letters, digits, _ . -)", metavar="NAME", show_default=False)
    ] = None,
    description: DescriptionOpt = None,
    var: VarOpt = None,
    locked: Annotated[bool, typer.Option("--locked", help="Create it locked (no changes allowed)")] = False,
    lock_reason: LockReasonOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Create an environment: `armillary env create dev -d Development --var ntp=pool.ntp.org`."""
    doc = file_or_flags(file, locked or flags_given(name, description, var, lock_reason))
    body: dict[str, Any] = {}
    if doc is None:
        body = {"name": need(name, "NAME"), "variables": parse_pairs(var, "--var")}
        put_given(body, description=description, locked=True if locked else None, lock_reason=lock_reason)
    send_created("/environments", body, doc, output)


@command(env_app, "update")
def env_update(
    ref: RefArg,
    name: RenameOpt = None,
    description: DescriptionOpt = None,
    var: VarOpt = None,
    unset_var: UnsetVarOpt = None,
    lock: Annotated[
        bool | None, typer.Option("--lock/--unlock", help="Lock or unlock it", show_default=False)
    ] = None,
    lock_reason: LockReasonOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Change an environment (only what is given); --var merges into its variables."""
    doc = file_or_flags(file, flags_given(name, description, var, unset_var, lock, lock_reason))
    patch = Patch(f"/environments/{ref_path(ref)}")
    if doc is None:
        patch.merge("variables", var, unset_var, "--var")
        patch.set(name=name, description=description, locked=lock, lock_reason=lock_reason)
    patch.send(doc, output)


@command(env_app, "lock")
def env_lock(
    ref: RefArg,
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why: shown to everyone the lock refuses", show_default=False)
    ],
    output: OutputOpt = None,
) -> None:
    """Freeze an environment: every change in it is refused (saying who and why), except by admins."""
    env = client().post_json(f"/environments/{ref_path(ref)}/lock", {"reason": reason})
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(env, shape)
        return
    note(f"Locked environment {env['name']} (by {env.get('locked_by') or 'you'}): {env.get('lock_reason')}", shape)


@command(env_app, "unlock")
def env_unlock(ref: RefArg, output: OutputOpt = None) -> None:
    """Lift an environment's lock (operators of the environment and admins)."""
    env = client().post_json(f"/environments/{ref_path(ref)}/unlock", None)
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(env, shape)
        return
    note(f"Unlocked environment {env['name']}.", shape)


delete_command(
    env_app,
    "/environments",
    "environment",
    "Delete an environment (refused while it still has hypervisors or systems).",
)


def register(app: typer.Typer) -> None:
    app.add_typer(env_app, name="env")

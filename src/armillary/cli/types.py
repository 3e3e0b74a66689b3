"""``armillary type``: what a system is for and how it is configured, over /api/v1/types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from armillary.cli.client import ref_path
from armillary.cli.common import (
    DescriptionOpt,
    FileOpt,
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
    load_mapping,
    parse_pairs,
    show_command,
)
from armillary.cli.edits import Patch, flags_given, need, put_given, send_created
from armillary.cli.output import Column, field

type_app = typer.Typer(
    help="Types: what a system is for and how it is configured (provisioner + default variables).",
    no_args_is_help=True,
)
TYPE_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("PROVISIONER", field("provisioner.kind")),
    ("DESCRIPTION", field("description")),
    ("VARIABLES", lambda t: len(t.get("variables") or {})),
]
ProvisionerOpt = Annotated[
    str | None,
    typer.Option("--provisioner", "-p", help="Provisioner kind: none, ansible, puppet, salt or script"),
]
SpecFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--spec-file",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        allow_dash=True,
        help="The provisioner's spec: a YAML or JSON mapping",
    ),
]

list_command(type_app, "/types", TYPE_COLUMNS, "types", "List types.")
show_command(type_app, "/types", "Show one type with its provisioner spec.")


@command(type_app, "create")
def type_create(
    name: NameArg = None,
    provisioner: ProvisionerOpt = None,
    spec_file: SpecFileOpt = None,
    description: DescriptionOpt = None,
    var: VarOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Create a type: `armillary type create web --provisioner script --spec-file web.yaml --var port=80`.

    --file also takes the seed shape: `{type: redis, puppet-std: {...}, classes: {...}}`.
    """
    doc = file_or_flags(file, flags_given(name, provisioner, spec_file, description, var))
    body: dict[str, Any] = {}
    if doc is None:
        body = {"name": need(name, "NAME"), "variables": parse_pairs(var, "--var")}
        if provisioner is not None or spec_file is not None:
            body["provisioner"] = {
                "kind": provisioner or "none",
                "spec": load_mapping(spec_file, "a spec") if spec_file else {},
            }
        put_given(body, description=description)
    send_created("/types", body, doc, output)


@command(type_app, "update")
def type_update(
    ref: RefArg,
    name: RenameOpt = None,
    provisioner: ProvisionerOpt = None,
    spec_file: SpecFileOpt = None,
    description: DescriptionOpt = None,
    var: VarOpt = None,
    unset_var: UnsetVarOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Change a type; --provisioner or --spec-file alone keeps the other half of the provisioner."""
    doc = file_or_flags(file, flags_given(name, provisioner, spec_file, description, var, unset_var))
    patch = Patch(f"/types/{ref_path(ref)}")
    if doc is None:
        patch.merge("variables", var, unset_var, "--var")
        if provisioner is not None or spec_file is not None:
            now = patch.current().get("provisioner") or {}
            patch.body["provisioner"] = {
                "kind": provisioner if provisioner is not None else now.get("kind", "none"),
                "spec": load_mapping(spec_file, "a spec") if spec_file else now.get("spec", {}),
            }
        patch.set(name=name, description=description)
    patch.send(doc, output)


delete_command(type_app, "/types", "type", "Delete a type (refused while systems use it).")


def register(app: typer.Typer) -> None:
    app.add_typer(type_app, name="type")

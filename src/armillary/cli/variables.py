"""``armillary variables``: the global variables (the lowest precedence), over /api/v1/variables."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli.client import CliError
from armillary.cli.common import OutputOpt, client, command, fmt, parse_pairs
from armillary.cli.output import Column, OutputFormat, dump, field, print_items, value_cell

variables_app = typer.Typer(
    help="Global variables: the lowest precedence (global < environment < group < type < system).",
    no_args_is_help=True,
)
VARIABLE_COLUMNS: list[Column] = [("KEY", field("key")), ("VALUE", lambda r: value_cell(r["value"]))]


def _print_variables(variables: dict[str, Any], output: OutputFormat | None) -> None:
    shape = fmt(output)
    rows = [{"key": k, "value": v} for k, v in variables.items()]
    print_items(rows, VARIABLE_COLUMNS, shape, page=variables, empty="No global variables.")


@command(variables_app, "get")
def variables_get(
    key: Annotated[
        str | None, typer.Argument(help="Only this key (prints its value)", metavar="KEY", show_default=False)
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Show the global variables, or the value of one."""
    variables = client().get_json("/variables")
    if key is None:
        _print_variables(variables, output)
        return
    if key not in variables:
        raise CliError(f"no global variable {key!r}")
    shape = fmt(output)
    if shape is OutputFormat.table:
        print(value_cell(variables[key]))
    else:
        dump(variables[key], shape)


@command(variables_app, "set")
def variables_set(
    pairs: Annotated[
        list[str],
        typer.Argument(help="key=value (value read as YAML); several allowed", metavar="KEY=VALUE..."),
    ],
    output: OutputOpt = None,
) -> None:
    """Set global variables: `armillary variables set ntp_server=pool.ntp.org retries=3`."""
    _print_variables(client().patch_json("/variables", parse_pairs(pairs, "KEY=VALUE")), output)


@command(variables_app, "unset")
def variables_unset(
    keys: Annotated[list[str], typer.Argument(help="Keys to remove", metavar="KEY...")],
    output: OutputOpt = None,
) -> None:
    """Remove global variables (keys that are not set are ignored)."""
    _print_variables(client().patch_json("/variables", {key: None for key in keys}), output)


def register(app: typer.Typer) -> None:
    app.add_typer(variables_app, name="variables")

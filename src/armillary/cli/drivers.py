"""``armillary drivers``: the hypervisor drivers installed on the server, over /api/v1/drivers."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli.client import ref_path
from armillary.cli.common import OutputOpt, client, command, fmt
from armillary.cli.output import Column, OutputFormat, dump, field, print_items, print_object

drivers_app = typer.Typer(help="Hypervisor drivers installed on the server.", no_args_is_help=True)
DRIVER_COLUMNS: list[Column] = [
    ("NAME", field("name")),
    ("SUMMARY", field("summary")),
    ("SECRET FIELDS", field("secret_fields")),
]


@command(drivers_app, "list")
def drivers_list(output: OutputOpt = None) -> None:
    """List the installed drivers."""
    drivers = client().get_json("/drivers")
    print_items(drivers, DRIVER_COLUMNS, fmt(output), page=drivers, empty="No drivers.")


def _schema_fields(schema: dict[str, Any]) -> dict[str, str]:
    required = set(schema.get("required") or [])
    out = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") or "/".join(p.get("type", "?") for p in prop.get("anyOf", [])) or "any"
        text = kind + (" (required)" if name in required else "")
        if "default" in prop:
            text += f" default {prop['default']!r}"
        if prop.get("description"):
            text += f": {prop['description']}"
        out[name] = text
    return out


@command(drivers_app, "show")
def drivers_show(
    name: Annotated[str, typer.Argument(help="Driver name", metavar="DRIVER")], output: OutputOpt = None
) -> None:
    """Show a driver: its hypervisor settings (--config) and system properties (--prop)."""
    described = client().get_json(f"/drivers/{ref_path(name)}")
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(described, shape)
        return
    print_object(
        {
            "name": described.get("name"),
            "summary": described.get("summary"),
            "secret_fields": described.get("secret_fields"),
            "config": _schema_fields(described.get("config_schema") or {}),
            "system properties": _schema_fields(described.get("system_schema") or {}),
        },
        shape,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(drivers_app, name="drivers")

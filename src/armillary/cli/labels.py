"""``armillary labels``: the labels in use on systems, over /api/v1/labels."""

from __future__ import annotations

from typing import Annotated

import typer

from armillary.cli.common import OutputOpt, client, command, fmt
from armillary.cli.output import Column, field, print_items

labels_app = typer.Typer(help="Labels in use on systems.", no_args_is_help=True)


@command(labels_app, "list")
def labels_list(
    key: Annotated[str | None, typer.Option("--key", help="Only this label key")] = None,
    output: OutputOpt = None,
) -> None:
    """Every label in use, with how many systems carry it."""
    labels = client().get_json("/labels", params={"key": key} if key else None)
    columns: list[Column] = [("KEY", field("key")), ("VALUE", field("value")), ("SYSTEMS", field("systems"))]
    print_items(labels, columns, fmt(output), page=labels, empty="No labels.")


def register(app: typer.Typer) -> None:
    app.add_typer(labels_app, name="labels")

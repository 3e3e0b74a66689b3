"""The ``armillary`` command: server administration and a client of the REST API."""

from __future__ import annotations

import typer

from armillary.cli import server

app = typer.Typer(
    name="armillary",
    help="Armillary: describe a machine once; create, provision, deploy and destroy it anywhere.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
server.register(app)

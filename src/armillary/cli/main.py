"""The ``armillary`` command: server administration and a client of the REST API.

Server side (works on the database directly): ``serve``, ``migrate``.
Client side (talks to a server's REST API, see ``--server``): ``env``, ``hypervisor``, ``type``,
``system`` (with its lifecycle actions), ``group``, ``variables``, ``drivers``, ``labels``, ``jobs``,
``schedule``.
"""

from __future__ import annotations

import typer

from armillary.cli import jobs, resources, server
from armillary.cli.common import root_callback

app = typer.Typer(
    name="armillary",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.callback()(root_callback)  # its docstring is the top-level help
server.register(app)
resources.register(app)
jobs.register(app)

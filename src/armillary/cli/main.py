"""The ``armillary`` command: server administration and a client of the REST API.

Server side (works on the database directly, no login): ``serve``, ``migrate``, ``doctor`` (is the
installation able to run: database, plugins, Python extras), ``admin`` (``admin create-user``: the
first admin, or a new password for a locked-out one).
Signing in: ``login``, ``logout``, ``whoami``, ``token`` (your API tokens); every client command
sends the token ``login`` stored for the server (or --token / ARMILLARY_TOKEN).
Client side (talks to a server's REST API, see ``--server``): ``env`` (with ``lock``/``unlock``),
``hypervisor``, ``type``, ``system`` (with its lifecycle actions), ``group``, ``variables``,
``drivers``, ``labels``, ``jobs``, ``schedule``; for admins ``user`` (accounts, roles, quotas) and
``audit`` (the trail of every API request).

Each command group is a module with ``register(app)`` (see common.py for the map); the calls below
fix the order ``armillary --help`` lists them in. A new group goes in its own module, registered here.
"""

from __future__ import annotations

import typer

from armillary.cli import (
    accounts,
    admin,
    audit,
    auth,
    backup,
    doctor,
    drivers,
    environments,
    groups,
    hypervisors,
    jobs,
    labels,
    network,
    schedules,
    server,
    systems,
    types,
    variables,
    worker,
)
from armillary.cli import audits  # noqa: E402  (issue 20)
from armillary.cli import clusters  # noqa: E402  (issue 15)
from armillary.cli import stacks  # noqa: E402  (issue 19)
from armillary.cli import subscriptions  # noqa: E402  (issue 18)
from armillary.cli import chat  # noqa: E402  (issue 18)
from armillary.cli.common import root_callback

app = typer.Typer(
    name="armillary",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.callback()(root_callback)  # its docstring is the top-level help
server.register(app)
worker.register(app)  # Celery mode: armillary worker (docs/distributed.md)
doctor.register(app)
backup.register(app)
admin.register(app)
auth.register(app)
environments.register(app)
hypervisors.register(app)
types.register(app)
systems.register(app)  # with the lifecycle actions (actions.py)
groups.register(app)
variables.register(app)
drivers.register(app)
labels.register(app)
jobs.register(app)
schedules.register(app)
network.register(app)
clusters.register(app)  # cluster, profile, policy, receiver (issue 15)
stacks.register(app)  # stack (issue 19)
accounts.register(app)
audit.register(app)
audits.register(app)  # check, audits, remediate, attention (issue 20)
subscriptions.register(app)  # subscription (issue 18)
chat.register(app)  # chat link, chat connections, bot (issue 18)

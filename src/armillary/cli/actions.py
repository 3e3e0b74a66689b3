"""Starting jobs from the CLI: the lifecycle actions of one system, and what every job start shares.

* ``armillary system ACTION HOST`` (provision, deploy, destroy, stage, stop, start, reload;
  ``clone HOST NEWHOST``) starts the action and prints the job; ``--wait`` follows it live (watch.py).
  ``system create`` is in systems.py (it also defines systems) and starts its action with
  ``start_action``. ``register`` adds these commands to the ``system`` group (systems.py calls it).
* The options of a job start (``--param``, ``--queue``, ``--idempotency-key``, ``--wait``), and
  ``post_job``/``print_started``, used by ``jobs start`` too (jobs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.text import Text

from armillary.cli.client import ApiError, ref_path
from armillary.cli.common import SYSTEM_REF_HELP, OutputOpt, client, command, fmt, parse_pairs
from armillary.cli.output import OutputFormat, print_object, stderr
from armillary.cli.watch import follow

ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        metavar="KEY=VALUE",
        help="Action parameter key=value (value read as YAML), e.g. release=v2; repeat.",
        show_default=False,
    ),
]
QueueOpt = Annotated[
    bool,
    typer.Option("--queue", help="Wait behind a job that holds the system instead of being refused (409)."),
]
IdempotencyKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        metavar="KEY",
        help="Repeat a request safely: the same key answers with the job it started the first time.",
        show_default=False,
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait", "-w", help="Follow the job live until it ends; exit 0 if it succeeded, 1 otherwise."
    ),
]

# `system ACTION HOST`; `system create` is in systems.py (it also defines systems), `clone` below.
ACTION_HELP = {
    "provision": "Provision a system: run its type's provisioner on the machine.",
    "deploy": "Deploy to a ready system (e.g. --param release=v2).",
    "destroy": "Destroy a system's machine (the record stays, state `destroyed`).",
    "stage": "Create and provision a system in one job.",
    "stop": "Stop a system's machine.",
    "start": "Start a stopped system's machine.",
    "reload": "Destroy and re-create a system's machine (and provision it again if it was).",
}


def print_started(job: dict[str, Any], what: str, output: OutputFormat) -> None:
    """A job just accepted: the job itself for scripts, its id and status for people."""
    if output is not OutputFormat.table:
        print_object(job, output)
        return
    shown = {"id": job["id"], "action": job["action"], "target": what, "status": job["status"]}
    if job.get("waiting_for_lock"):
        shown["waiting_for_lock"] = True
    print_object(shown, output)
    stderr.print(Text(f"Follow it with: armillary jobs watch {job['id']}", style="dim"))


def post_job(path: str, body: dict[str, Any], params: Any, idempotency_key: str | None) -> dict[str, Any]:
    """POST a job start (with its Idempotency-Key when given); the job the server accepted."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return client().request("POST", path, json=body, params=params, headers=headers).json()


def start_action(
    ref: str,
    action: str,
    param: list[str] | None,
    *,
    queue: bool,
    idempotency_key: str | None,
    wait: bool,
    output: OutputFormat | None,
    hostname: str | None = None,
) -> None:
    """``POST /systems/{ref}/actions``; print the job, or follow it to its end with ``wait``."""
    body: dict[str, Any] = {"action": action, "params": parse_pairs(param, "--param")}
    if hostname is not None:
        body["hostname"] = hostname
    try:
        job = post_job(
            f"/systems/{ref_path(ref)}/actions", body, {"queue": "true"} if queue else None, idempotency_key
        )
    except ApiError as error:
        if error.status == 404 and action == "create":
            error.notes.append(
                "To define a new system, give its --env (and --hypervisor, ...): "
                "see `armillary system create --help`."
            )
        raise
    shape = fmt(output)
    if wait:
        follow(job, shape)
    else:
        print_started(job, ref if hostname is None else f"{ref} → {hostname}", shape)


def _action_command(action: str) -> Callable[..., None]:
    def run(
        ref: Annotated[str, typer.Argument(help=SYSTEM_REF_HELP, metavar="HOST")],
        param: ParamOpt = None,
        queue: QueueOpt = False,
        idempotency_key: IdempotencyKeyOpt = None,
        wait: WaitOpt = False,
        output: OutputOpt = None,
    ) -> None:
        start_action(
            ref, action, param, queue=queue, idempotency_key=idempotency_key, wait=wait, output=output
        )

    run.__name__ = f"system_{action}"
    run.__doc__ = (
        f"{ACTION_HELP[action]}\n\nStarts a job and prints it (id, status); --wait follows it live "
        f"(like `armillary jobs watch`) and exits 0 if it succeeded, 1 if it failed or was cancelled."
    )
    return run


def system_clone(
    ref: Annotated[str, typer.Argument(help="The system to copy: id or hostname", metavar="HOST")],
    new_hostname: Annotated[str, typer.Argument(help="The copy's hostname", metavar="NEWHOST")],
    param: ParamOpt = None,
    queue: QueueOpt = False,
    idempotency_key: IdempotencyKeyOpt = None,
    wait: WaitOpt = False,
    output: OutputOpt = None,
) -> None:
    """Copy a system under a new hostname and create the copy's machine (provisioned like the source)."""
    start_action(
        ref,
        "clone",
        param,
        queue=queue,
        idempotency_key=idempotency_key,
        wait=wait,
        output=output,
        hostname=new_hostname,
    )


def register(app: typer.Typer) -> None:
    """``system provision|deploy|...|reload|clone`` (``system create`` starts its action itself)."""
    for action in ACTION_HELP:
        command(app, action)(_action_command(action))
    command(app, "clone")(system_clone)

"""``armillary system``: the machines, their labels and resolved variables, and their import.

The lifecycle actions (``system provision|deploy|...|clone``) are in actions.py, registered on this
group by ``register``; ``system create HOSTNAME`` alone starts the ``create`` action through it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli import actions, imports
from armillary.cli.actions import IdempotencyKeyOpt, ParamOpt, QueueOpt, WaitOpt, start_action
from armillary.cli.client import ref_path
from armillary.cli.common import (
    SYSTEM_REF_HELP,
    AllOpt,
    EnvFilterOpt,
    EnvOpt,
    FileOpt,
    LimitOpt,
    OutputOpt,
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
from armillary.cli.output import Column, OutputFormat, dump, field, note, print_items, value_cell

system_app = typer.Typer(
    help="Systems: the machines (id or hostname), their labels and variables.", no_args_is_help=True
)
SystemRefArg = Annotated[str, typer.Argument(help=SYSTEM_REF_HELP, metavar="REF")]
SYSTEM_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("HOSTNAME", field("hostname")),
    ("ENVIRONMENT", field("environment")),
    ("HYPERVISOR", field("hypervisor")),
    ("TYPE", field("type")),
    ("STATE", field("state")),
    ("LABELS", field("labels")),
]
LabelOpt = Annotated[
    list[str] | None,
    typer.Option("--label", "-l", metavar="KEY=VALUE", help="Label key=value; repeat.", show_default=False),
]
PropOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--prop",
        metavar="KEY=VALUE",
        help="Driver property key=value, e.g. image=debian-12 (value read as YAML); repeat.",
        show_default=False,
    ),
]
HypervisorOpt = Annotated[str | None, typer.Option("--hypervisor", help="Hypervisor (id or name)")]
TypeOpt = Annotated[str | None, typer.Option("--type", "-t", help="Type (id or name)")]
CpuOpt = Annotated[int | None, typer.Option("--cpu", min=1, help="CPUs")]
MemoryOpt = Annotated[str | None, typer.Option("--memory", help="Memory: MiB, or with a unit (2G, 512M)")]
DiskOpt = Annotated[str | None, typer.Option("--disk", help="Disk: GiB, or with a unit (20G, 1T)")]
UserOpt = Annotated[str | None, typer.Option("--user", help="Login user")]
OsOpt = Annotated[str | None, typer.Option("--os", help="Operating system, e.g. debian-12")]
AddressOpt = Annotated[
    list[str] | None, typer.Option("--address", metavar="IP", help="IP address; repeat.", show_default=False)
]

def _machine(
    cpu: int | None,
    memory: str | None,
    disk: str | None,
    user: str | None,
    os: str | None,
    address: list[str] | None,
) -> dict[str, Any]:
    machine: dict[str, Any] = {
        k: v
        for k, v in (("cpu", cpu), ("memory", memory), ("disk", disk), ("user", user), ("os", os))
        if v is not None
    }
    if address:
        machine["addresses"] = list(address)
    return machine


@command(system_app, "list")
def system_list(
    env: EnvFilterOpt = None,
    type_: Annotated[str | None, typer.Option("--type", "-t", help="Only this type (id or name)")] = None,
    hypervisor: Annotated[
        str | None, typer.Option("--hypervisor", help="Only this hypervisor (id or name)")
    ] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Only this state (defined, ready, error…)")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option(
            "--label",
            "-l",
            metavar="KEY=VALUE",
            help="Only systems with label key=value; repeat to require several.",
        ),
    ] = None,
    q: Annotated[str | None, typer.Option("--q", "-q", help="Hostname prefix")] = None,
    limit: LimitOpt = None,
    every: AllOpt = False,
    output: OutputOpt = None,
) -> None:
    """List systems, filtered: `armillary system list --env prod --label cell=c1 --state ready`."""
    parse_pairs(label, "--label", yaml_values=False)  # a malformed filter is a usage error, here
    params = [
        (k, v)
        for k, v in (
            ("environment", env),
            ("type", type_),
            ("hypervisor", hypervisor),
            ("state", state),
            ("q", q),
        )
        if v
    ]
    params += [("label", item) for item in label or []]
    list_pages("/systems", params, limit, every, SYSTEM_COLUMNS, output, "systems")


show_command(system_app, "/systems", "Show one system.", ref_help=SYSTEM_REF_HELP)


@command(system_app, "create")
def system_create(
    hostname: Annotated[
        str | None, typer.Argument(help="Hostname", metavar="HOSTNAME", show_default=False)
    ] = None,
    env: EnvOpt = None,
    hypervisor: HypervisorOpt = None,
    driver: Annotated[
        str | None, typer.Option("--driver", help="Use the environment's only hypervisor of this driver")
    ] = None,
    type_: TypeOpt = None,
    label: LabelOpt = None,
    var: VarOpt = None,
    prop: PropOpt = None,
    cpu: CpuOpt = None,
    memory: MemoryOpt = None,
    disk: DiskOpt = None,
    user: UserOpt = None,
    os: OsOpt = None,
    address: AddressOpt = None,
    file: FileOpt = None,
    param: ParamOpt = None,
    queue: QueueOpt = False,
    idempotency_key: IdempotencyKeyOpt = None,
    wait: WaitOpt = False,
    output: OutputOpt = None,
) -> None:
    """Define a system (state `defined`): `armillary system create web1 --env dev --hypervisor sim1 --cpu 2 --memory 2G`.

    --file also takes the seed shape: `{env: dev, machine: {hostname: red1, ...}, simulated: {image: x}, type: redis}`.

    With HOSTNAME alone (no --env, --file or other field flag) it creates the machine of a system
    already defined: it starts the `create` action, like `armillary system provision HOSTNAME`
    (--param, --queue, --idempotency-key and --wait apply to that).
    """
    definition = (env, hypervisor, driver, type_, label, var, prop, cpu, memory, disk, user, os, address)
    if hostname is not None and file is None and all(x is None for x in definition):
        start_action(
            hostname, "create", param, queue=queue, idempotency_key=idempotency_key, wait=wait, output=output
        )
        return
    if param or queue or idempotency_key or wait:
        raise typer.BadParameter(
            "--param, --queue, --idempotency-key and --wait start the create action of a defined system: "
            "give them with HOSTNAME alone (define the system first, without them)"
        )
    doc = file_or_flags(file, flags_given(hostname, *definition))
    body: dict[str, Any] = {}
    if doc is None:
        body = {
            "hostname": need(hostname, "HOSTNAME"),
            "environment": need(env, "--env"),
            "machine": _machine(cpu, memory, disk, user, os, address),
            "driver": parse_pairs(prop, "--prop"),
            "labels": parse_pairs(label, "--label", yaml_values=False),
            "variables": parse_pairs(var, "--var"),
        }
        put_given(body, hypervisor=hypervisor, driver_name=driver, type=type_)
    send_created("/systems", body, doc, output)


@command(system_app, "update")
def system_update(
    ref: SystemRefArg,
    hostname: Annotated[str | None, typer.Option("--hostname", help="Rename it")] = None,
    hypervisor: HypervisorOpt = None,
    type_: TypeOpt = None,
    label: LabelOpt = None,
    unset_label: Annotated[
        list[str] | None, typer.Option("--unset-label", metavar="KEY", help="Remove a label; repeat.")
    ] = None,
    var: VarOpt = None,
    unset_var: UnsetVarOpt = None,
    prop: PropOpt = None,
    unset_prop: Annotated[
        list[str] | None, typer.Option("--unset-prop", metavar="KEY", help="Remove a driver property")
    ] = None,
    cpu: CpuOpt = None,
    memory: MemoryOpt = None,
    disk: DiskOpt = None,
    user: UserOpt = None,
    os: OsOpt = None,
    address: AddressOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Change a system; --label, --var and --prop merge into what it has."""
    flags = (hostname, hypervisor, type_, label, unset_label, var, unset_var, prop, unset_prop)
    doc = file_or_flags(file, flags_given(*flags, cpu, memory, disk, user, os, address))
    patch = Patch(f"/systems/{ref_path(ref)}")
    if doc is None:
        patch.merge("labels", label, unset_label, "--label", yaml_values=False)
        patch.merge("variables", var, unset_var, "--var")
        patch.merge("driver", prop, unset_prop, "--prop")
        patch.set(machine=_machine(cpu, memory, disk, user, os, address) or None)
        patch.set(hostname=hostname, hypervisor=hypervisor, type=type_)
    patch.send(doc, output)


delete_command(
    system_app,
    "/systems",
    "system",
    "Forget a system's record (only `defined` or `destroyed` systems; it does not destroy a machine).",
    ref_help=SYSTEM_REF_HELP,
)


@command(system_app, "forget")
def system_forget(ref: SystemRefArg, output: OutputOpt = None) -> None:
    """Drop a system's record and leave its machine running (its addresses stay reserved, its DNS records go)."""
    answer = client().post_json(f"/systems/{ref_path(ref)}/forget", {})
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(answer, shape)
    reserved = ", ".join(answer["addresses_reserved"]) or "none"
    note(f"Forgot system {answer['hostname']}; its machine {answer['provider_id'] or '-'} is left as it is "
         f"(addresses kept reserved: {reserved}).", shape)


@command(system_app, "variables")
def system_variables(ref: SystemRefArg, output: OutputOpt = None) -> None:
    """A system's resolved variables: each value and where it came from (global < environment < group < type < system)."""
    resolved = client().get_json(f"/systems/{ref_path(ref)}/variables")
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(resolved, shape)
        return

    def source(s: dict[str, Any]) -> str:
        return s["level"] + (f" {s['name']}" if s.get("name") else "")

    rows = [
        {
            "key": key,
            "value": v.get("value"),
            "source": source(v["source"]),
            "overrides": [source(o) for o in v.get("overrides") or []],
        }
        for key, v in (resolved.get("variables") or {}).items()
    ]
    columns: list[Column] = [
        ("KEY", field("key")),
        ("VALUE", lambda r: value_cell(r["value"])),
        ("SOURCE", field("source")),
        ("OVERRIDES", field("overrides")),
    ]
    print_items(rows, columns, shape, empty="No variables.")


command(system_app, "import")(imports.import_command)


def register(app: typer.Typer) -> None:
    actions.register(system_app)  # after the commands above: `system --help` lists them first
    app.add_typer(system_app, name="system")

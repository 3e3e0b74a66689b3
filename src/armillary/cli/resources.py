"""Client commands over the REST API: environments, hypervisors, types, systems, groups, variables.

Conventions, the same for every resource:

* ``list`` shows one page (``--limit``, default 100) or every page (``--all``), with the filters the
  API has; ``show``, ``update`` and ``delete`` take an id or a name (a system: id or hostname).
* ``create`` and ``update`` take flags for the common fields, or ``--file`` with a whole YAML/JSON
  document sent as is (the seed shapes are accepted by the API too).
* ``update`` changes only what is given (PATCH). ``--var``/``--label``/``--config``/``--prop`` are
  merged into the stored mapping (``--unset-*`` removes keys): the CLI reads the resource, merges,
  and writes it back with ``If-Match``, so a concurrent change is refused instead of overwritten.
* Values of ``--var``, ``--config`` and ``--prop`` are read as YAML scalars (``2``, ``true``,
  ``[a, b]``); quote them to keep a string (``--var 'port="8080"'``). Label values are strings.

``list`` (without filters), ``show`` and ``delete`` are made by the factories in common.py; each
resource below declares only what is its own: its path, columns, filters and field flags.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from armillary.cli import imports
from armillary.cli.client import CliError, ref_path
from armillary.cli.common import (
    REF_HELP,
    AllOpt,
    DescriptionOpt,
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
    list_command,
    list_pages,
    load_mapping,
    merged,
    parse_pairs,
    require_changes,
    show_command,
)
from armillary.cli.output import (
    Column,
    OutputFormat,
    dump,
    field,
    note,
    print_items,
    print_object,
)

RefArg = Annotated[str, typer.Argument(help=REF_HELP, metavar="REF")]
NameArg = Annotated[str | None, typer.Argument(help="Name", metavar="NAME", show_default=False)]
RenameOpt = Annotated[str | None, typer.Option("--name", help="Rename it")]
EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Environment (id or name)")]
EnvFilterOpt = Annotated[str | None, typer.Option("--env", "-e", help="Only this environment (id or name)")]


# ---------------------------------------------------------------- create and update


def _given(*flags: Any) -> bool:
    """Whether any field flag was given (None is "not given"): --file may not be combined with them."""
    return any(flag is not None for flag in flags)


def _put_given(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``body`` with the fields that were given added (None is "not given", so not sent)."""
    body.update((key, value) for key, value in fields.items() if value is not None)
    return body


def _need(value: Any, what: str) -> Any:
    if value is None:
        raise typer.BadParameter(f"missing {what} (or give --file)")
    return value


def _created(path: str, body: dict[str, Any] | None, doc: Any, output: OutputFormat | None) -> None:
    api = client()
    result = api.send_document("POST", path, doc) if doc is not None else api.post_json(path, body)
    print_object(result, fmt(output))


class _Patch:
    """The body of an ``update`` built from its flags, then sent as one PATCH.

    Merging flags into a stored mapping (``--var`` into ``variables``) needs the stored object: it
    is read at most once, when first needed, and its ETag goes back with the PATCH (``If-Match``)
    so a change made in between is refused instead of overwritten. Without a merge nothing is read
    and no ETag is sent.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.body: dict[str, Any] = {}
        self.etag: str | None = None
        self._current: dict[str, Any] | None = None

    def current(self) -> dict[str, Any]:
        """The stored object (read once)."""
        if self._current is None:
            response = client().get(self.path)
            self._current, self.etag = response.json(), response.headers.get("etag")
        return self._current

    def merge(
        self, key: str, add: list[str] | None, remove: list[str] | None, option: str, yaml_values: bool = True
    ) -> None:
        """``--OPTION k=v`` / ``--unset-OPTION k`` merged into the stored mapping ``key``, if given."""
        if add or remove:
            stored = self.current().get(key)
            self.body[key] = merged(stored, parse_pairs(add, option, yaml_values=yaml_values), remove)

    def set(self, **fields: Any) -> None:
        """The plain fields that were given (None is "not given")."""
        _put_given(self.body, **fields)

    def send(self, doc: Any, output: OutputFormat | None) -> None:
        """PATCH the body (refused when empty), or the --file document as is, and print the result."""
        api = client()
        if doc is not None:
            result = api.send_document("PATCH", self.path, doc)
        else:
            require_changes(self.body)
            result = api.patch_json(self.path, self.body, self.etag)
        print_object(result, fmt(output))


# ================================================================ environments

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
    doc = file_or_flags(file, locked or _given(name, description, var, lock_reason))
    body: dict[str, Any] = {}
    if doc is None:
        body = {"name": _need(name, "NAME"), "variables": parse_pairs(var, "--var")}
        _put_given(body, description=description, locked=True if locked else None, lock_reason=lock_reason)
    _created("/environments", body, doc, output)


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
    doc = file_or_flags(file, _given(name, description, var, unset_var, lock, lock_reason))
    patch = _Patch(f"/environments/{ref_path(ref)}")
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


# ================================================================ hypervisors

hypervisor_app = typer.Typer(
    help="Hypervisors: compute endpoints (a driver and its settings) in one environment.",
    no_args_is_help=True,
)
HYPERVISOR_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("ENVIRONMENT", field("environment")),
    ("DRIVER", field("driver")),
    ("CONFIG", field("config")),
    ("SECRETS SET", field("secrets_set")),
]
ConfigOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--config",
        "-c",
        metavar="KEY=VALUE",
        help="Driver setting key=value (value read as YAML); repeat. See `armillary drivers show DRIVER`.",
        show_default=False,
    ),
]


@command(hypervisor_app, "list")
def hypervisor_list(
    env: EnvFilterOpt = None,
    driver: Annotated[str | None, typer.Option("--driver", help="Only this driver")] = None,
    limit: LimitOpt = None,
    every: AllOpt = False,
    output: OutputOpt = None,
) -> None:
    """List hypervisors."""
    params = [(k, v) for k, v in (("environment", env), ("driver", driver)) if v]
    list_pages("/hypervisors", params, limit, every, HYPERVISOR_COLUMNS, output, "hypervisors")


show_command(
    hypervisor_app,
    "/hypervisors",
    "Show one hypervisor (secret settings are never shown; `secrets_set` names those that hold a value).",
)


@command(hypervisor_app, "create")
def hypervisor_create(
    name: NameArg = None,
    env: EnvOpt = None,
    driver: Annotated[
        str | None, typer.Option("--driver", help="Driver name (see `armillary drivers list`)")
    ] = None,
    config: ConfigOpt = None,
    description: DescriptionOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Create a hypervisor: `armillary hypervisor create sim1 --env dev --driver simulated --config latency_ms=50`."""
    doc = file_or_flags(file, _given(name, env, driver, config, description))
    body: dict[str, Any] = {}
    if doc is None:
        body = {
            "name": _need(name, "NAME"),
            "environment": _need(env, "--env"),
            "driver": _need(driver, "--driver"),
            "config": parse_pairs(config, "--config"),
        }
        _put_given(body, description=description)
    _created("/hypervisors", body, doc, output)


@command(hypervisor_app, "update")
def hypervisor_update(
    ref: RefArg,
    name: RenameOpt = None,
    description: DescriptionOpt = None,
    config: ConfigOpt = None,
    unset_config: Annotated[
        list[str] | None,
        typer.Option("--unset-config", metavar="KEY", help="Remove a setting (secret or not); repeat."),
    ] = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Change a hypervisor; --config merges into its settings (secrets not given are kept)."""
    doc = file_or_flags(file, _given(name, description, config, unset_config))
    patch = _Patch(f"/hypervisors/{ref_path(ref)}")
    if doc is None:
        if config or unset_config:
            # The API merges the given settings into the stored ones (it alone knows the secrets);
            # null removes one. So nothing is read here.
            removed = {key: None for key in unset_config or ()}
            patch.body["config"] = {**parse_pairs(config, "--config"), **removed}
        patch.set(name=name, description=description)
    patch.send(doc, output)


delete_command(
    hypervisor_app, "/hypervisors", "hypervisor", "Delete a hypervisor (refused while systems use it)."
)


# ================================================================ types

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
    doc = file_or_flags(file, _given(name, provisioner, spec_file, description, var))
    body: dict[str, Any] = {}
    if doc is None:
        body = {"name": _need(name, "NAME"), "variables": parse_pairs(var, "--var")}
        if provisioner is not None or spec_file is not None:
            body["provisioner"] = {
                "kind": provisioner or "none",
                "spec": load_mapping(spec_file, "a spec") if spec_file else {},
            }
        _put_given(body, description=description)
    _created("/types", body, doc, output)


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
    doc = file_or_flags(file, _given(name, provisioner, spec_file, description, var, unset_var))
    patch = _Patch(f"/types/{ref_path(ref)}")
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


# ================================================================ systems

system_app = typer.Typer(
    help="Systems: the machines (id or hostname), their labels and variables.", no_args_is_help=True
)
SYSTEM_REF_HELP = "Id or hostname"
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

# The options of the lifecycle actions (`system create|provision|...`, see jobs.py), here because
# `system create` takes them too: with HOSTNAME alone it starts the create action.
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
        from armillary.cli import jobs  # jobs imports this module

        jobs.start_action(
            hostname, "create", param, queue=queue, idempotency_key=idempotency_key, wait=wait, output=output
        )
        return
    if param or queue or idempotency_key or wait:
        raise typer.BadParameter(
            "--param, --queue, --idempotency-key and --wait start the create action of a defined system: "
            "give them with HOSTNAME alone (define the system first, without them)"
        )
    doc = file_or_flags(file, _given(hostname, *definition))
    body: dict[str, Any] = {}
    if doc is None:
        body = {
            "hostname": _need(hostname, "HOSTNAME"),
            "environment": _need(env, "--env"),
            "machine": _machine(cpu, memory, disk, user, os, address),
            "driver": parse_pairs(prop, "--prop"),
            "labels": parse_pairs(label, "--label", yaml_values=False),
            "variables": parse_pairs(var, "--var"),
        }
        _put_given(body, hypervisor=hypervisor, driver_name=driver, type=type_)
    _created("/systems", body, doc, output)


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
    doc = file_or_flags(file, _given(*flags, cpu, memory, disk, user, os, address))
    patch = _Patch(f"/systems/{ref_path(ref)}")
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
        ("VALUE", lambda r: _value_cell(r["value"])),
        ("SOURCE", field("source")),
        ("OVERRIDES", field("overrides")),
    ]
    print_items(rows, columns, shape, empty="No variables.")


command(system_app, "import")(imports.import_command)


def _value_cell(value: Any) -> str:
    """A variable's value as JSON would spell it (true, null, [1, 2]), strings as they are."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# ================================================================ groups

group_app = typer.Typer(
    help="Groups: label selectors that carry variables (a system is a member when it has "
    "every label of the selector).",
    no_args_is_help=True,
)
GROUP_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("SELECTOR", field("selector")),
    ("PRIORITY", field("priority")),
    ("DESCRIPTION", field("description")),
    ("VARIABLES", lambda g: len(g.get("variables") or {})),
]
SelectorOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--selector",
        metavar="KEY=VALUE",
        help="Label key=value a member must carry; repeat (update: replaces the selector).",
        show_default=False,
    ),
]
PriorityOpt = Annotated[
    int | None,
    typer.Option("--priority", min=-1000, max=1000, help="Higher wins when two groups set one key"),
]

list_command(group_app, "/groups", GROUP_COLUMNS, "groups", "List groups.")
show_command(group_app, "/groups", "Show one group.")


@command(group_app, "systems")
def group_systems(
    ref: RefArg, limit: LimitOpt = None, every: AllOpt = False, output: OutputOpt = None
) -> None:
    """List the systems that are members of a group."""
    path = f"/groups/{ref_path(ref)}/systems"
    list_pages(path, [], limit, every, SYSTEM_COLUMNS, output, "member systems")


@command(group_app, "create")
def group_create(
    name: NameArg = None,
    selector: SelectorOpt = None,
    priority: PriorityOpt = None,
    description: DescriptionOpt = None,
    var: VarOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Create a group: `armillary group create frontend --selector tier=frontend --var log_level=warn`."""
    doc = file_or_flags(file, _given(name, selector, priority, description, var))
    body: dict[str, Any] = {}
    if doc is None:
        body = {
            "name": _need(name, "NAME"),
            "selector": parse_pairs(_need(selector, "--selector"), "--selector", yaml_values=False),
            "variables": parse_pairs(var, "--var"),
        }
        _put_given(body, priority=priority, description=description)
    _created("/groups", body, doc, output)


@command(group_app, "update")
def group_update(
    ref: RefArg,
    name: RenameOpt = None,
    selector: SelectorOpt = None,
    priority: PriorityOpt = None,
    description: DescriptionOpt = None,
    var: VarOpt = None,
    unset_var: UnsetVarOpt = None,
    file: FileOpt = None,
    output: OutputOpt = None,
) -> None:
    """Change a group; --selector replaces the selector, --var merges into its variables."""
    doc = file_or_flags(file, _given(name, selector, priority, description, var, unset_var))
    patch = _Patch(f"/groups/{ref_path(ref)}")
    if doc is None:
        patch.merge("variables", var, unset_var, "--var")
        if selector:
            patch.body["selector"] = parse_pairs(selector, "--selector", yaml_values=False)
        patch.set(name=name, priority=priority, description=description)
    patch.send(doc, output)


delete_command(group_app, "/groups", "group", "Delete a group (its members keep their labels).")


# ================================================================ global variables, drivers, labels

variables_app = typer.Typer(
    help="Global variables: the lowest precedence (global < environment < group < type < system).",
    no_args_is_help=True,
)
VARIABLE_COLUMNS: list[Column] = [("KEY", field("key")), ("VALUE", lambda r: _value_cell(r["value"]))]


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
        print(_value_cell(variables[key]))
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
    app.add_typer(env_app, name="env")
    app.add_typer(hypervisor_app, name="hypervisor")
    app.add_typer(type_app, name="type")
    app.add_typer(system_app, name="system")
    app.add_typer(group_app, name="group")
    app.add_typer(variables_app, name="variables")
    app.add_typer(drivers_app, name="drivers")
    app.add_typer(labels_app, name="labels")

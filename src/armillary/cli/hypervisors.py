"""``armillary hypervisor``: compute endpoints and their driver settings, over /api/v1/hypervisors."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli.client import ref_path
from armillary.cli.common import (
    AllOpt,
    DescriptionOpt,
    EnvFilterOpt,
    EnvOpt,
    FileOpt,
    LimitOpt,
    NameArg,
    OutputOpt,
    RefArg,
    RenameOpt,
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
from armillary.cli.output import Column, OutputFormat, dump, field, note

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
    doc = file_or_flags(file, flags_given(name, env, driver, config, description))
    body: dict[str, Any] = {}
    if doc is None:
        body = {
            "name": need(name, "NAME"),
            "environment": need(env, "--env"),
            "driver": need(driver, "--driver"),
            "config": parse_pairs(config, "--config"),
        }
        put_given(body, description=description)
    send_created("/hypervisors", body, doc, output)


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
    doc = file_or_flags(file, flags_given(name, description, config, unset_config))
    patch = Patch(f"/hypervisors/{ref_path(ref)}")
    if doc is None:
        if config or unset_config:
            # The API merges the given settings into the stored ones (it alone knows the secrets);
            # null removes one. So nothing is read here.
            removed = {key: None for key in unset_config or ()}
            patch.body["config"] = {**parse_pairs(config, "--config"), **removed}
        patch.set(name=name, description=description)
    patch.send(doc, output)


@command(hypervisor_app, "adopt")
def hypervisor_adopt(
    ref: RefArg,
    provider_id: Annotated[str, typer.Argument(help="The machine's id, as `GET /hypervisors/REF/unmanaged` lists it")],
    hostname: Annotated[str | None, typer.Option("--hostname", help="Default: the machine's name")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", metavar="KEY=VALUE", help="Label key=value; repeat.")
    ] = None,
    output: OutputOpt = None,
) -> None:
    """Adopt a machine made outside Armillary as a system (tagged with its id); exit 1 if the driver refused."""
    machine = {"provider_id": provider_id, "hostname": hostname,
               "labels": parse_pairs(label, "--label", yaml_values=False) or None}
    answer = client().post_json(f"/hypervisors/{ref_path(ref)}/adopt", {"machines": [machine]})
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(answer, shape)
    for system in answer["adopted"]:
        note(f"Adopted {system['provider_id']} as system {system['hostname']} (id {system['id']}, "
             f"{system['state']}).", shape)
    for failed in answer["failed"]:
        note(f"Not adopted: {failed['provider_id']}: {failed['error']}", OutputFormat.json)  # on stderr
    if answer["failed"]:
        raise typer.Exit(1)


delete_command(
    hypervisor_app, "/hypervisors", "hypervisor", "Delete a hypervisor (refused while systems use it)."
)


def register(app: typer.Typer) -> None:
    app.add_typer(hypervisor_app, name="hypervisor")

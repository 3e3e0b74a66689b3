"""``armillary ip-pool``, ``armillary ip`` and ``armillary dns``: address pools, who holds which address,
DNS zones and their check, over /api/v1/ip-pools, /api/v1/ip-addresses and /api/v1/dns-zones."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli.common import (
    AllOpt,
    LimitOpt,
    OutputOpt,
    client,
    command,
    delete_command,
    fmt,
    list_command,
    list_pages,
    parse_pairs,
    show_command,
)
from armillary.cli.output import Column, OutputFormat, field, print_items, print_object

pool_app = typer.Typer(help="IP pools: networks addresses are given out of, per environment.", no_args_is_help=True)
ip_app = typer.Typer(help="IP addresses: who holds which; reservations with a note.", no_args_is_help=True)
dns_app = typer.Typer(help="DNS zones systems are registered in, and their check against the inventory.",
                      no_args_is_help=True)


def _use(pool: dict[str, Any]) -> str:
    use = pool.get("utilization") or {}
    return f"{use.get('used', 0)}/{use.get('size', 0)} ({use.get('percent', 0)}%)"


POOL_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("ENVIRONMENT", field("environment.name")),
    ("HYPERVISOR", field("hypervisor.name")),
    ("CIDR", field("cidr")),
    ("RANGE", lambda p: f"{p['range_start']} - {p['range_end']}"),
    ("GATEWAY", field("gateway")),
    ("USED", _use),
]
ADDRESS_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("ADDRESS", field("address")),
    ("POOL", field("pool.name")),
    ("KIND", field("kind")),
    ("SYSTEM", field("system.name")),
    ("NOTE", field("note")),
]
ZONE_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("ZONE", field("name")),
    ("ENVIRONMENT", field("environment.name")),
    ("BACKEND", field("backend")),
    ("REVERSE", field("reverse")),
    ("TTL", field("ttl")),
]
RECORD_COLUMNS: list[Column] = [
    ("PROBLEM", field("problem")),
    ("NAME", field("name")),
    ("TYPE", field("type")),
    ("VALUES", lambda r: " ".join(r.get("values") or [])),
    ("OWNER", field("owner")),
]

list_command(pool_app, "/ip-pools", POOL_COLUMNS, "IP pools", "List IP pools with their use.")
show_command(pool_app, "/ip-pools", "Show an IP pool with its use.", ref_metavar="POOL")
delete_command(pool_app, "/ip-pools", "IP pool", "Delete an IP pool no system holds addresses of.",
               ref_metavar="POOL")


@command(pool_app, "create")
def pool_create(
    name: Annotated[str, typer.Argument(help="Name", metavar="NAME")],
    environment: Annotated[str, typer.Option("--env", help="Environment")],
    cidr: Annotated[str, typer.Option("--cidr", help="Network, e.g. 10.1.2.0/24 or fd00:1::/64")],
    gateway: Annotated[str | None, typer.Option("--gateway", help="Gateway (never handed out)")] = None,
    range_: Annotated[str | None, typer.Option("--range", help="Allocation range FIRST-LAST")] = None,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="DNS server told to machines; repeat")] = None,
    reserve: Annotated[list[str] | None, typer.Option("--reserve", help="Address never handed out; repeat")] = None,
    hypervisor: Annotated[str | None, typer.Option("--hypervisor", help="Serve only this hypervisor")] = None,
    network: Annotated[str | None, typer.Option("--network", help="The network as the driver names it")] = None,
    vlan: Annotated[int | None, typer.Option("--vlan", help="VLAN id")] = None,
    manual: Annotated[bool, typer.Option("--manual", help="Give addresses only to systems asking for one")] = False,
    output: OutputOpt = None,
) -> None:
    """Create an IP pool: `armillary ip-pool create lan --env dev --cidr 10.1.2.0/24 --gateway 10.1.2.1`"""
    body: dict[str, Any] = {"name": name, "environment": environment, "cidr": cidr, "gateway": gateway,
                            "dns_servers": dns or [], "reserved": reserve or [], "hypervisor": hypervisor,
                            "network_name": network, "vlan": vlan, "auto_assign": not manual}
    if range_:
        first, _, last = range_.partition("-")
        body["range_start"], body["range_end"] = first.strip() or None, last.strip() or None
    print_object(client().post_json("/ip-pools", {k: v for k, v in body.items() if v is not None}), fmt(output))


@command(pool_app, "free")
def pool_free(pool: Annotated[str, typer.Argument(help="Pool id or name", metavar="POOL")],
              output: OutputOpt = None) -> None:
    """The runs of free addresses of a pool, lowest first."""
    columns: list[Column] = [("FIRST", field("first")), ("LAST", field("last")), ("COUNT", field("count"))]
    print_items(client().get_json(f"/ip-pools/{pool}/free"), columns, fmt(output), empty="No free address.")


@command(ip_app, "list")
def ip_list(
    pool: Annotated[str | None, typer.Option("--pool", help="Pool id or name")] = None,
    system: Annotated[str | None, typer.Option("--system", help="System id or hostname")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Exactly this address")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="allocated, static, observed or reserved")] = None,
    limit: LimitOpt = None, every: AllOpt = False, output: OutputOpt = None,
) -> None:
    """Who holds which address: search by pool, system, address or kind."""
    params = [(k, v) for k, v in (("pool", pool), ("system", system), ("address", address), ("kind", kind)) if v]
    list_pages("/ip-addresses", params, limit, every, ADDRESS_COLUMNS, output, "addresses")


@command(ip_app, "reserve")
def ip_reserve(
    pool: Annotated[str, typer.Argument(help="Pool id or name", metavar="POOL")],
    address: Annotated[str | None, typer.Option("--address", help="This address (default: the next free one)")] = None,
    note: Annotated[str, typer.Option("--note", help="Why, e.g. 'core router'")] = "",
    output: OutputOpt = None,
) -> None:
    """Keep an address out of the pool (routers, printers)."""
    body = {"pool": pool, "note": note, **({"address": address} if address else {})}
    print_object(client().post_json("/ip-addresses", body), fmt(output))


delete_command(ip_app, "/ip-addresses", "reservation", "Free a reservation (by its id).", ref_metavar="ID")

list_command(dns_app, "/dns-zones", ZONE_COLUMNS, "DNS zones", "List DNS zones.")
show_command(dns_app, "/dns-zones", "Show a DNS zone (secrets are never shown).", ref_metavar="ZONE_ID")
delete_command(dns_app, "/dns-zones", "DNS zone", "Delete a DNS zone no system has records in.",
               ref_metavar="ZONE_ID")


@command(dns_app, "create")
def zone_create(
    name: Annotated[str, typer.Argument(help="Zone, e.g. dev.example.com", metavar="ZONE")],
    environment: Annotated[str, typer.Option("--env", help="Environment")],
    backend: Annotated[str, typer.Option("--backend", help="rfc2136 or powerdns")],
    setting: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE backend setting; repeat")] = None,
    ttl: Annotated[int, typer.Option("--ttl", help="TTL of the records")] = 300,
    output: OutputOpt = None,
) -> None:
    """Create a DNS zone: `armillary dns create dev.example.com --env dev --backend rfc2136
    --set server=10.0.0.53 --set tsig_key_name=armillary. --set tsig_secret=...`"""
    body = {"name": name, "environment": environment, "backend": backend, "ttl": ttl,
            "config": parse_pairs(setting, "--set", yaml_values=False)}
    print_object(client().post_json("/dns-zones", body), fmt(output))


@command(dns_app, "check")
def zone_check(zone: Annotated[str, typer.Argument(help="Zone id", metavar="ZONE_ID")],
               output: OutputOpt = None) -> None:
    """Compare a zone with the inventory: records missing, stale (no system has them) and foreign."""
    report = client().get_json(f"/dns-zones/{zone}/check")
    shape = fmt(output)
    if shape is not OutputFormat.table:
        print_object(report, shape)
        return
    rows = [{**r, "problem": problem} for problem in ("missing", "stale", "foreign") for r in report[problem]]
    print_items(rows, RECORD_COLUMNS, shape, empty=f"{report['zone']}: all {report['ok']} records match.")
    if rows:
        raise typer.Exit(1)  # scripts and monitoring see a drifted zone


def register(app: typer.Typer) -> None:
    app.add_typer(pool_app, name="ip-pool")
    app.add_typer(ip_app, name="ip")
    app.add_typer(dns_app, name="dns")

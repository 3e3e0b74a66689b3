"""Pydantic shapes of the network API: IP pools, addresses, DNS zones."""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StrictBool, StringConstraints, WithJsonSchema

from armillary.domain.schemas import Description, Input, json_int, JsonObject, Name, Output, Ref, RefOut


def _address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"not a network in CIDR notation ({exc})") from None


# A zone name: labels of letters, digits, '-' and '_', 1-63 long, an optional final dot.
ZONE_PATTERN = r"^(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?$"
_ZONE = re.compile(ZONE_PATTERN)


def _zone_name(value: str) -> str:
    if not _ZONE.match(value):
        raise ValueError(f"not a DNS zone name: {value!r}")
    return value.lower().rstrip(".") + "."


Address = Annotated[str, StringConstraints(max_length=45), AfterValidator(_address), WithJsonSchema(
    {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]})]
Cidr = Annotated[str, StringConstraints(max_length=64), AfterValidator(_network)]
ZoneName = Annotated[str, StringConstraints(max_length=253, pattern=ZONE_PATTERN), AfterValidator(_zone_name)]
Note = Annotated[str, StringConstraints(max_length=1000)]


class IpPoolCreate(Input):
    name: Name
    environment: Ref
    hypervisor: Ref | None = Field(None, description="Serve only this hypervisor's systems (default: every "
                                                         "system of the environment)")
    cidr: Cidr = Field(description="The network, e.g. 10.1.2.0/24 or fd00:1::/64")
    range_start: Address | None = Field(None, description="First address handed out (default: the "
                                                          "network's first host address)")
    range_end: Address | None = Field(None, description="Last address handed out (default: its last)")
    gateway: Address | None = Field(None, description="Told to the machines; never handed out")
    dns_servers: list[Address] = Field(default_factory=list, max_length=8)
    reserved: list[Address] = Field(default_factory=list, max_length=1024,
                                    description="Addresses never handed out (besides the gateway)")
    network_name: Annotated[str, StringConstraints(max_length=255)] | None = Field(
        None, description="The network as the driver names it: docker network, libvirt network or bridge, "
                          "AWS subnet id, vSphere port group")
    vlan: json_int(ge=0, le=4094) | None = Field(None)
    auto_assign: StrictBool = Field(True, description="Give an address to every create of a system it serves "
                                                "(false: only addresses asked for by machine.addresses)")
    description: Description = ""


class IpPoolUpdate(Input):
    name: Name | None = None
    description: Description | None = None
    gateway: Address | None = None
    dns_servers: list[Address] | None = Field(None, max_length=8)
    network_name: Annotated[str, StringConstraints(max_length=255)] | None = None
    vlan: json_int(ge=0, le=4094) | None = Field(None)
    auto_assign: StrictBool | None = None


class Utilization(Output):
    size: int
    used: int
    free: int
    percent: float
    by_kind: dict[str, int]


class IpPoolOut(Output):
    id: int
    name: str
    description: str
    environment: RefOut
    hypervisor: RefOut | None
    cidr: str
    ip_version: int
    range_start: str
    range_end: str
    gateway: str | None
    dns_servers: list[str]
    network_name: str | None
    vlan: int | None
    auto_assign: bool
    utilization: Utilization
    created_at: datetime
    updated_at: datetime
    version: int


class ReservationCreate(Input):
    pool: Ref
    address: Address | None = Field(None, description="The address to reserve (default: the next free one)")
    note: Note = Field("", description="Why, e.g. 'core router'")


class IpAddressOut(Output):
    id: int
    address: str
    pool: RefOut
    kind: Literal["allocated", "static", "observed", "reserved"]
    system: RefOut | None = Field(None, description="The system holding it (name: its hostname)")
    note: str
    created_by: str | None
    created_at: datetime


class FreeRange(Output):
    first: str
    last: str
    count: int


DnsBackendKind = Literal["rfc2136", "powerdns"]


class DnsZoneCreate(Input):
    name: ZoneName = Field(description="The zone, e.g. dev.example.com or 2.1.10.in-addr.arpa")
    environment: Ref
    backend: DnsBackendKind = Field(description="rfc2136 (dynamic update with TSIG: BIND, Knot, PowerDNS, "
                                                "Windows DNS) or powerdns (its HTTP API)")
    config: JsonObject = Field(default_factory=dict, description="The backend's settings; secrets "
                                                                 "(TSIG secret, API key) are write-only")
    ttl: json_int(ge=1, le=86400) = Field(300)
    description: Description = ""


class DnsZoneUpdate(Input):
    description: Description | None = None
    config: JsonObject | None = Field(None, description="Settings to change, merged into the stored ones; "
                                                        "null removes a setting")
    ttl: json_int(ge=1, le=86400) | None = Field(None)


class DnsZoneOut(Output):
    id: int
    name: str
    description: str
    environment: RefOut
    backend: str
    reverse: bool
    ttl: int
    config: dict[str, Any] = Field(description="Non-secret settings; secret fields are never returned")
    secrets_set: list[str]
    created_at: datetime
    updated_at: datetime
    version: int


class DnsRecordOut(Output):
    zone: RefOut
    system: RefOut | None
    name: str
    type: str
    values: list[str]
    ttl: int
    updated_at: datetime


class ZoneRecordOut(Output):
    name: str
    type: str
    values: list[str]
    owner: str | None = None


class ZoneCheckOut(Output):
    zone: str
    missing: list[ZoneRecordOut] = Field(description="Registered by Armillary, absent or different in the zone")
    stale: list[ZoneRecordOut] = Field(description="Owned by Armillary in the zone, but no system has it")
    foreign: list[ZoneRecordOut] = Field(description="At a name an inventory system uses, owned by "
                                                     "someone else")
    ok: int = Field(description="Records that match the inventory")

"""``Armillary::DNSRecord``: one rrset in a DNS zone of the stack's environment, written through the
zone's backend (RFC 2136, PowerDNS) with the owner ``stack:<stack id>`` (the backends' ownership marker),
so a retry finds it already right and a record owned by something else is never overwritten."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import Field, StringConstraints
from sqlalchemy.orm import Session

from armillary.domain.schemas import Input, Ref, json_int
from armillary.engine.context import StepContext
from armillary.network.dns.base import DnsError, DnsRecord, absolute_name, in_zone
from armillary.network.dns_registration import backend_of
from armillary.network.models import DnsZone
from armillary.stacks.models import StackResource
from armillary.stacks.resources.base import Act, Observed, ResourceFailure, ResourceType
from armillary.stacks.resources.lookups import find

Text = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class DnsRecordProperties(Input):
    zone: Ref
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        ..., description="Relative to the zone ('www'), or absolute with a trailing dot; '@' is the apex")
    type: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9]{1,10}$")] = "A"
    values: list[Text] = Field(..., min_length=1, max_length=100)
    ttl: json_int(0, 2**31 - 1) | None = Field(None, description="Default: the zone's TTL")


def owner_of(stack_id: int) -> str:
    return f"stack:{stack_id}"


def fqdn(zone: DnsZone, name: str) -> str:
    if name == "@":
        return zone.name
    if name.endswith("."):
        absolute = absolute_name(name)
        if not in_zone(absolute, zone.name):
            raise ResourceFailure(f"{name} is not inside zone {zone.name}")
        return absolute
    return absolute_name(f"{name}.{zone.name}")


class DnsRecordResource(ResourceType):
    name = "Armillary::DNSRecord"
    description = "A DNS record (rrset) in a zone of the stack's environment"
    Properties = DnsRecordProperties
    replace_on: ClassVar[Mapping[str, str]] = {
        "zone": "a record lives in one zone", "name": "a record's name is its identity",
        "type": "a record's type is its identity"}
    attribute_names = ("id", "fqdn", "type", "values")

    @classmethod
    def create_before_delete(cls, properties: Mapping[str, Any], record: StackResource) -> str | None:
        """A record is replaced only when its zone, name or type change: the new rrset is another one and
        can be written before the old one is removed. (A replacement of a missing record writes the same
        rrset: the stack then forgets the old record instead of removing it.)"""
        return None

    def _record(self, session: Session, act: Act) -> tuple[DnsZone, DnsRecord]:
        props = self.props(act.properties)
        zone = find(session, DnsZone, props.zone, "DNS zone", act.stack.environment_id)
        try:
            record = DnsRecord(fqdn(zone, props.name), props.type, props.ttl if props.ttl is not None else zone.ttl,
                               tuple(props.values))
        except DnsError as exc:
            raise ResourceFailure(str(exc)) from None
        return zone, record

    def create(self, ctx: StepContext, session: Session, act: Act) -> None:
        zone, record = self._record(session, act)
        backend = backend_of(zone, ctx.runtime.secret_box)
        try:
            backend.ensure(record, owner_of(act.stack.id))
        finally:
            backend.close()
        act.record.physical_id = f"{zone.id}:{record.name}:{record.type}"
        ctx.log(f"registered {record.name} {record.type} {' '.join(record.values)}")

    update = create  # ensure makes the rrset hold exactly these values

    def delete(self, ctx: StepContext, session: Session, act: Act) -> None:
        if not act.record.physical_id:
            return
        zone_id, name, rtype = self._parts(act.record)
        zone = session.get(DnsZone, zone_id)
        if zone is None:
            return  # the zone went, and its records with it
        backend = backend_of(zone, ctx.runtime.secret_box)
        try:
            backend.remove(name, rtype, owner_of(act.stack.id))
        finally:
            backend.close()
        ctx.log(f"removed {name} {rtype}")

    @staticmethod
    def _parts(record: StackResource) -> tuple[int, str, str]:
        zone_id, name, rtype = (record.physical_id or "").split(":", 2)
        return int(zone_id), name, rtype

    def attributes(self, session: Session, record: StackResource) -> dict[str, Any]:
        if not record.physical_id:
            return {"id": None}
        _, name, rtype = self._parts(record)
        return {"id": record.physical_id, "fqdn": name, "type": rtype,
                "values": list((record.properties or {}).get("values") or [])}

    def observe(self, ctx: StepContext, session: Session, record: StackResource) -> Observed:
        zone_id, name, rtype = self._parts(record)
        zone = session.get(DnsZone, zone_id)
        if zone is None:
            return Observed("missing", "the zone is gone")
        backend = backend_of(zone, ctx.runtime.secret_box)
        try:
            found = [r for r in backend.read(name) if r.type == rtype]
        except Exception as exc:  # noqa: BLE001 - a server that does not answer is reported, not fatal
            return Observed("unknown", f"{name} {rtype}: {exc}")
        finally:
            backend.close()
        if not found:
            return Observed("missing", f"{name} {rtype} is not in the zone")
        want = DnsRecord(name, rtype, 0, tuple((record.properties or {}).get("values") or ())).values
        if found[0].values != want:
            return Observed("ok", "", {"values": {"expected": list(want), "actual": list(found[0].values)}})
        return Observed()

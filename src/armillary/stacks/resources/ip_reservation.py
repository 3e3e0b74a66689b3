"""``Armillary::IPReservation``: one address of an IP pool kept out of allocation for the stack (a VIP,
a router), through ``armillary.network.ipam``: a given ``address`` is taken exactly (409-style failure
naming its holder), else the pool's next free one. The quick ``stack-resource`` child job takes it and
records its row id as the physical id in one transaction."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

from pydantic import Field
from sqlalchemy.orm import Session

from armillary.domain.errors import Conflict
from armillary.domain.schemas import Input, Ref
from armillary.domain.schemas import IpAddress as IpText
from armillary.engine.context import StepContext
from armillary.network import ipam
from armillary.network.models import AddressKind, IpAddress, IpPool
from armillary.stacks.models import StackResource
from armillary.stacks.resources.base import Act, Observed, ResourceFailure, ResourceType
from armillary.stacks.resources.lookups import find


class IpReservationProperties(Input):
    pool: Ref
    address: IpText | None = Field(None, description="This address exactly; default: the pool's next free one")
    note: Annotated[str, Field(max_length=1000)] = ""


class IpReservationResource(ResourceType):
    name = "Armillary::IPReservation"
    description = "An address of an IP pool reserved for the stack"
    Properties = IpReservationProperties
    replace_on: ClassVar[Mapping[str, str]] = {
        "pool": "a reservation belongs to one pool", "address": "a reservation holds one address"}
    attribute_names = ("id", "address", "pool")

    @classmethod
    def create_before_delete(cls, properties: Mapping[str, Any], record: StackResource) -> str | None:
        """An address is held by one reservation: a fixed ``address`` the old reservation holds cannot be
        reserved again before it is released (unless the old one is already gone); the pool's next free
        one, or another address, can."""
        wanted, current = properties.get("address"), (record.attributes or {}).get("address")
        if wanted is not None and current is not None and str(wanted) == str(current) \
                and (record.drift or {}).get("state") != "missing":
            return f"the template fixes the address {current}, which the old reservation holds until released"
        return None

    def create(self, ctx: StepContext, session: Session, act: Act) -> None:
        props = self.props(act.properties)
        pool = find(session, IpPool, props.pool, "IP pool", act.stack.environment_id)
        note = props.note or f"stack {act.stack.name}: {act.record.name}"
        try:
            if props.address is not None:
                row = ipam.take(session, pool, ipaddress.ip_address(props.address), kind=AddressKind.RESERVED,
                                system_id=None, note=note, actor=act.actor.get("name"))
            else:
                row = ipam.allocate(session, pool, None, kind=AddressKind.RESERVED, note=note,
                                    actor=act.actor.get("name"))
        except (Conflict, ValueError) as exc:
            raise ResourceFailure(getattr(exc, "detail", None) or str(exc)) from None
        session.flush()
        act.record.physical_id = str(row.id)
        ctx.log(f"reserved {row.address} in pool {pool.name}")

    def update(self, ctx: StepContext, session: Session, act: Act) -> None:
        row = self._row(session, act.record)
        if row is None:
            raise ResourceFailure("the reservation is gone")
        row.note = act.properties.get("note") or f"stack {act.stack.name}: {act.record.name}"

    def delete(self, ctx: StepContext, session: Session, act: Act) -> None:
        row = self._row(session, act.record)
        if row is not None:
            session.delete(row)
            ctx.log(f"released {row.address}")

    @staticmethod
    def _row(session: Session, record: StackResource) -> IpAddress | None:
        return session.get(IpAddress, int(record.physical_id)) if record.physical_id else None

    def attributes(self, session: Session, record: StackResource) -> dict[str, Any]:
        row = self._row(session, record)
        return {"id": row.id, "address": row.address, "pool": row.pool.name} if row else {"id": None}

    def observe(self, ctx: StepContext, session: Session, record: StackResource) -> Observed:
        row = self._row(session, record)
        return Observed() if row is not None else Observed("missing", "the reservation was released")

    def adopt(self, session: Session, act: Act, external_id: str) -> None:
        row = session.query(IpAddress).filter(IpAddress.address == external_id,
                                              IpAddress.kind == AddressKind.RESERVED).one_or_none()
        if row is None or row.pool.environment_id != act.stack.environment_id:
            raise ResourceFailure(f"no reserved address {external_id} in the stack's environment to adopt")
        act.record.physical_id = str(row.id)

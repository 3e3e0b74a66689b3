"""/api/v1/ip-addresses: who holds which address; manual reservations (routers, printers) with a note.

Addresses of systems are taken and given back by their create and destroy jobs; here an operator reserves
an address (or the next free one of a pool) and frees a reservation. Search by address, pool, system, kind.
"""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from armillary.api.deps import IdPath, PageParams, SessionDep, created, get_by_ref, paginate, resolve_ref
from armillary.api.lookups import get_system, hostnames
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import Conflict, InvalidInput, NotFound
from armillary.domain.schemas import Page
from armillary.network import ipam
from armillary.network.models import AddressKind, IpAddress, IpPool
from armillary.network.schemas import Address, IpAddressOut, ReservationCreate

router = APIRouter(prefix="/ip-addresses", tags=["network"])


def to_out(session: Session, row: IpAddress, names: dict[int, str] | None = None) -> IpAddressOut:
    """``names``: the page's holders' hostnames looked up at once (see ``lookups.hostnames``)."""
    system = None
    if row.system_id is not None:
        if names is None:
            names = hostnames(session, [row.system_id])
        system = {"id": row.system_id, "name": names.get(row.system_id) or ""}
    return IpAddressOut(id=row.id, address=row.address, pool={"id": row.pool.id, "name": row.pool.name},
                        kind=row.kind, system=system, note=row.note, created_by=row.created_by,
                        created_at=row.created_at)


@router.get("", response_model=Page[IpAddressOut])
def list_addresses(
    request: Request, response: Response, page: PageParams = Depends(),
    address: Address | None = Query(None, description="Exactly this address"),
    pool: str | None = Query(None, max_length=63, description="Pool id or name"),
    system: str | None = Query(None, max_length=253, description="System id or hostname"),
    kind: str | None = Query(None, pattern="^(allocated|static|observed|reserved)$"),
    session: Session = SessionDep, access: Access = requires(Permission.ENV_READ),
) -> dict:
    query = access.visible(select(IpAddress).join(IpPool), IpPool.environment_id)
    if address is not None:
        try:
            query = query.where(IpAddress.address == str(ipaddress.ip_address(address)))
        except ValueError:
            raise InvalidInput("address", f"not an IP address: {address!r}") from None
    if pool is not None:
        found = get_by_ref(session, IpPool, pool, "IP pool")
        access.check(found.environment, hidden=f"no IP pool {pool!r}", mutating=False)
        ipam.release_stale(session, found.id)
        query = query.where(IpAddress.pool_id == found.id)
    if system is not None:
        query = query.where(IpAddress.system_id == get_system(session, system, access).id)
    if kind is not None:
        query = query.where(IpAddress.kind == kind)
    items, next_url = paginate(session, query.options(selectinload(IpAddress.pool)), IpAddress, page, request,
                               response)
    names = hostnames(session, [row.system_id for row in items])
    return {"items": [to_out(session, row, names) for row in items], "next": next_url}


@router.get("/{address_id}", response_model=IpAddressOut)
def read_address(address_id: IdPath, session: Session = SessionDep,
                 access: Access = requires(Permission.ENV_READ)) -> IpAddressOut:
    return to_out(session, _get(session, address_id, access))


def _get(session: Session, address_id: int, access: Access) -> IpAddress:
    row = session.get(IpAddress, address_id)
    if row is None:
        raise NotFound(f"no IP address {address_id}")
    access.check(row.pool.environment, hidden=f"no IP address {address_id}")
    return row


@router.post("", status_code=201, response_model=IpAddressOut)
def reserve(body: ReservationCreate, request: Request, response: Response, session: Session = SessionDep,
            access: Access = requires(Permission.ENV_OPERATE)) -> IpAddressOut:
    """Reserve ``address`` (409 naming its holder when taken) or the pool's next free address."""
    pool = resolve_ref(session, IpPool, body.pool, "pool", "IP pool")
    access.check_ref(pool.environment, "pool", body.pool)
    actor = access.principal.name
    if body.address is not None:
        address = ipam.address_in(ipaddress.ip_network(pool.cidr), body.address, "address")
        row = ipam.take(session, pool, address, kind=AddressKind.RESERVED, system_id=None, note=body.note,
                        actor=actor)
    else:
        row = ipam.allocate(session, pool, None, kind=AddressKind.RESERVED, note=body.note, actor=actor)
    session.flush()
    created(response, request, row.id, 1)
    return to_out(session, row)


@router.delete("/{address_id}", status_code=204)
def release(address_id: IdPath, session: Session = SessionDep,
            access: Access = requires(Permission.ENV_OPERATE)) -> Response:
    """Free a reservation. Addresses held by systems are given back by destroying the system's machine."""
    row = _get(session, address_id, access)
    if row.kind != AddressKind.RESERVED:
        raise Conflict(f"{row.address} is held by {ipam.holder_of(session, row)}; destroy its machine to free it")
    session.delete(row)
    return Response(status_code=204)

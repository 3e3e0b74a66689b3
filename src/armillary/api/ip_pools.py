"""/api/v1/ip-pools: address pools per environment (optionally per hypervisor), with their use.

A pool's gateway and ``reserved`` addresses are taken at creation as reservations (never handed out);
overlapping pools in one environment are refused; a pool whose addresses are held by systems can't be
deleted (409). See ``armillary.network.ipam`` for how addresses are taken.
"""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from armillary.api.deps import (
    PageParams,
    SessionDep,
    check_if_match,
    created,
    ensure_unique_name,
    get_by_ref,
    paginate,
    resolve_ref,
    set_etag,
)
from armillary.api.lookups import get_environment_for
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import InUse, InvalidInput
from armillary.domain.models import Environment, Hypervisor
from armillary.domain.schemas import Page
from armillary.network import ipam
from armillary.network.models import AddressKind, IpAddress, IpPool
from armillary.network.schemas import FreeRange, IpPoolCreate, IpPoolOut, IpPoolUpdate

router = APIRouter(prefix="/ip-pools", tags=["network"])


def to_out(session: Session, pool: IpPool) -> IpPoolOut:
    return IpPoolOut(
        id=pool.id, name=pool.name, description=pool.description,
        environment={"id": pool.environment.id, "name": pool.environment.name},
        hypervisor={"id": pool.hypervisor.id, "name": pool.hypervisor.name} if pool.hypervisor else None,
        cidr=pool.cidr, ip_version=pool.ip_version, range_start=ipam.address_at(pool, pool.first_offset),
        range_end=ipam.address_at(pool, pool.last_offset), gateway=pool.gateway, dns_servers=pool.dns_servers or [],
        network_name=pool.network_name, vlan=pool.vlan, auto_assign=pool.auto_assign,
        utilization=ipam.utilization(session, pool), created_at=pool.created_at, updated_at=pool.updated_at,
        version=pool.version,
    )


def get_pool_for(session: Session, ref: str, access: Access) -> IpPool:
    pool = get_by_ref(session, IpPool, ref, "IP pool")
    access.check(pool.environment, hidden=f"no IP pool {ref!r}")
    return pool


@router.post("", status_code=201, response_model=IpPoolOut)
def create_pool(body: IpPoolCreate, request: Request, response: Response, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_ADMIN)) -> IpPoolOut:
    env = resolve_ref(session, Environment, body.environment, "environment", "environment")
    access.check_ref(env, "environment", body.environment)
    hypervisor = None
    if body.hypervisor is not None:
        hypervisor = resolve_ref(session, Hypervisor, body.hypervisor, "hypervisor", "hypervisor")
        if hypervisor.environment_id != env.id:
            raise InvalidInput("hypervisor", f"hypervisor {hypervisor.name!r} is not in environment {env.name!r}")
    shape = ipam.pool_shape(body.cidr, body.range_start, body.range_end)
    ensure_unique_name(session, IpPool, body.name, "IP pool")
    ipam.check_no_overlap(session, env.id, shape.network)
    gateway = ipam.address_in(shape.network, body.gateway, "gateway") if body.gateway else None
    for i, server in enumerate(body.dns_servers):
        if ipaddress.ip_address(server).version not in (4, 6):
            raise InvalidInput(f"dns_servers.{i}", "not an IP address")
    pool = IpPool(
        name=body.name, description=body.description, environment=env, hypervisor=hypervisor, cidr=body.cidr,
        ip_version=shape.network.version, first_offset=shape.first_offset, last_offset=shape.last_offset,
        gateway=str(gateway) if gateway else None, dns_servers=body.dns_servers, network_name=body.network_name,
        vlan=body.vlan, auto_assign=body.auto_assign,
    )
    session.add(pool)
    session.flush()
    actor = access.principal.name
    if gateway is not None:
        ipam.take(session, pool, gateway, kind=AddressKind.RESERVED, system_id=None, note="gateway", actor=actor)
    for i, value in enumerate(dict.fromkeys(body.reserved)):
        address = ipam.address_in(shape.network, value, f"reserved.{i}")
        if address != gateway:
            ipam.take(session, pool, address, kind=AddressKind.RESERVED, system_id=None, note="reserved by the pool",
                      actor=actor)
    created(response, request, pool.id, pool.version)
    return to_out(session, pool)


@router.get("", response_model=Page[IpPoolOut])
def list_pools(
    request: Request, response: Response, page: PageParams = Depends(),
    environment: str | None = Query(None, max_length=63, description="Environment id or name"),
    session: Session = SessionDep, access: Access = requires(Permission.ENV_READ),
) -> dict:
    query = access.visible(select(IpPool), IpPool.environment_id)
    if environment is not None:
        query = query.where(IpPool.environment_id == get_environment_for(session, environment, access).id)
    items, next_url = paginate(session, query, IpPool, page, request, response)
    return {"items": [to_out(session, p) for p in items], "next": next_url}


@router.get("/{ref}", response_model=IpPoolOut)
def read_pool(ref: str, response: Response, session: Session = SessionDep,
              access: Access = requires(Permission.ENV_READ)) -> IpPoolOut:
    pool = get_pool_for(session, ref, access)
    ipam.release_stale(session, pool.id)  # what a crash left is not counted as used
    set_etag(response, pool.version)
    return to_out(session, pool)


@router.get("/{ref}/free", response_model=list[FreeRange])
def free_ranges(ref: str, limit: int = Query(100, ge=1, le=1000), session: Session = SessionDep,
                access: Access = requires(Permission.ENV_READ)) -> list[dict]:
    """The runs of free addresses of the pool's allocation range, lowest first."""
    pool = get_pool_for(session, ref, access)
    ipam.release_stale(session, pool.id)
    return ipam.free_ranges(session, pool, limit)


@router.patch("/{ref}", response_model=IpPoolOut)
def update_pool(ref: str, body: IpPoolUpdate, request: Request, response: Response, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_ADMIN)) -> IpPoolOut:
    pool = get_pool_for(session, ref, access)
    check_if_match(request, pool.version)
    changes = body.model_dump(exclude_unset=True)
    if changes.get("name") is not None:
        ensure_unique_name(session, IpPool, changes["name"], "IP pool", exclude_id=pool.id)
        pool.name = changes["name"]
    if "gateway" in changes:
        _move_gateway(session, pool, changes["gateway"], access.principal.name)
    for field in ("description", "dns_servers", "network_name", "vlan", "auto_assign"):
        if field in changes and (changes[field] is not None or field in ("network_name", "vlan")):
            setattr(pool, field, changes[field])
    session.flush()
    set_etag(response, pool.version)
    return to_out(session, pool)


def _move_gateway(session: Session, pool: IpPool, gateway: str | None, actor: str) -> None:
    """The old gateway's reservation goes, the new one is taken (409 if a system holds it)."""
    network = ipaddress.ip_network(pool.cidr)
    new = ipam.address_in(network, gateway, "gateway") if gateway else None
    if pool.gateway:
        old = session.scalar(select(IpAddress).where(IpAddress.pool_id == pool.id, IpAddress.address == pool.gateway,
                                                     IpAddress.kind == AddressKind.RESERVED))
        if old is not None:
            session.delete(old)
            session.flush()
    if new is not None:
        ipam.take(session, pool, new, kind=AddressKind.RESERVED, system_id=None, note="gateway", actor=actor)
    pool.gateway = str(new) if new else None


@router.delete("/{ref}", status_code=204)
def delete_pool(ref: str, request: Request, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_ADMIN)) -> Response:
    pool = get_pool_for(session, ref, access)
    check_if_match(request, pool.version)
    ipam.release_stale(session, pool.id)
    held = exists().where(IpAddress.pool_id == pool.id, IpAddress.system_id.is_not(None))
    if session.scalar(select(held)):
        raise InUse(f"IP pool {pool.name!r} still has addresses held by systems; destroy them first")
    session.delete(pool)
    return Response(status_code=204)

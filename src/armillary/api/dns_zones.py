"""/api/v1/dns-zones: the DNS zones systems are registered in, per environment, and their check.

A zone names its backend (``rfc2136``: dynamic update with TSIG; ``powerdns``: its HTTP API) and that
backend's settings, validated by the backend's typed settings; secrets (TSIG secret, API key) are
write-only like every secret. Names ending in ``in-addr.arpa.``/``ip6.arpa.`` are reverse zones (PTR).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import exists, select
from sqlalchemy.orm import Session, selectinload

from armillary.api.deps import (
    PageParams,
    SessionDep,
    check_if_match,
    created,
    id_of,
    paginate,
    resolve_ref,
    set_etag,
)
from armillary.api.lookups import get_environment_for, get_system, hostnames
from armillary.api.secret_settings import merged_config, store_secrets, validated_config
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import Conflict, DomainError, InUse, InvalidInput, NotFound
from armillary.domain.models import Environment
from armillary.domain.schemas import Page
from armillary.network.dns import BACKENDS, DnsError, DnsUnavailable
from armillary.network.models import DnsRecordRow, DnsZone
from armillary.network.schemas import DnsRecordOut, DnsZoneCreate, DnsZoneOut, DnsZoneUpdate, ZoneCheckOut
from armillary.network.zone_check import check_zone

router = APIRouter(prefix="/dns-zones", tags=["network"])


class DnsServerUnavailable(DomainError):
    status, slug, title = 503, "dns-unavailable", "The zone's DNS server cannot be reached"


class DnsServerRefused(DomainError):
    status, slug, title = 502, "dns-refused", "The zone's DNS server refused"

records_router = APIRouter(prefix="/dns-records", tags=["network"])

REVERSE_SUFFIXES = (".in-addr.arpa.", ".ip6.arpa.")


def to_out(zone: DnsZone) -> DnsZoneOut:
    return DnsZoneOut(
        id=zone.id, name=zone.name, description=zone.description,
        environment={"id": zone.environment.id, "name": zone.environment.name}, backend=zone.backend,
        reverse=zone.reverse, ttl=zone.ttl, config=zone.config, secrets_set=sorted(zone.secret_fields or []),
        created_at=zone.created_at, updated_at=zone.updated_at, version=zone.version,
    )


def get_zone_for(session: Session, ref: str, access: Access) -> DnsZone:
    """By id (zone names repeat across environments)."""
    zone_id = id_of(ref)
    zone = session.get(DnsZone, zone_id) if zone_id else None
    if zone is None:
        raise NotFound(f"no DNS zone {ref!r}")
    access.check(zone.environment, hidden=f"no DNS zone {ref!r}")
    return zone


def _settings(backend: str, config: dict) -> tuple[dict, dict]:
    plain, secrets = validated_config(BACKENDS[backend].Config, config)
    plain.pop("zone", None)  # the zone's own name, never a setting of its own
    return plain, secrets


@router.post("", status_code=201, response_model=DnsZoneOut)
def create_zone(body: DnsZoneCreate, request: Request, response: Response, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_ADMIN)) -> DnsZoneOut:
    env = resolve_ref(session, Environment, body.environment, "environment", "environment")
    access.check_ref(env, "environment", body.environment)
    if "zone" in body.config:
        raise InvalidInput("config.zone", "the zone is named by the zone's name, not in its settings")
    plain, secrets = _settings(body.backend, {**body.config, "zone": body.name})
    if session.scalar(select(exists().where(DnsZone.environment_id == env.id, DnsZone.name == body.name))):
        raise Conflict(f"environment {env.name!r} already has the DNS zone {body.name}")
    zone = DnsZone(name=body.name, description=body.description, environment=env, backend=body.backend,
                   config=plain, ttl=body.ttl, reverse=body.name.endswith(REVERSE_SUFFIXES))
    store_secrets(zone, request.app.state.secret_box, secrets)
    session.add(zone)
    session.flush()
    created(response, request, zone.id, zone.version)
    return to_out(zone)


@router.get("", response_model=Page[DnsZoneOut])
def list_zones(
    request: Request, response: Response, page: PageParams = Depends(),
    environment: str | None = Query(None, max_length=63, description="Environment id or name"),
    session: Session = SessionDep, access: Access = requires(Permission.ENV_READ),
) -> dict:
    query = access.visible(select(DnsZone), DnsZone.environment_id)
    if environment is not None:
        query = query.where(DnsZone.environment_id == get_environment_for(session, environment, access).id)
    items, next_url = paginate(session, query, DnsZone, page, request, response)
    return {"items": [to_out(z) for z in items], "next": next_url}


@router.get("/{ref}", response_model=DnsZoneOut)
def read_zone(ref: str, response: Response, session: Session = SessionDep,
              access: Access = requires(Permission.ENV_READ)) -> DnsZoneOut:
    zone = get_zone_for(session, ref, access)
    set_etag(response, zone.version)
    return to_out(zone)


@router.patch("/{ref}", response_model=DnsZoneOut)
def update_zone(ref: str, body: DnsZoneUpdate, request: Request, response: Response, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_ADMIN)) -> DnsZoneOut:
    zone = get_zone_for(session, ref, access)
    check_if_match(request, zone.version)
    if body.description is not None:
        zone.description = body.description
    if body.ttl is not None:
        zone.ttl = body.ttl
    if body.config is not None:
        box = request.app.state.secret_box
        plain, secrets = _settings(zone.backend, {**merged_config(zone, box, body.config), "zone": zone.name})
        zone.config = plain
        store_secrets(zone, box, secrets)
    session.flush()
    set_etag(response, zone.version)
    return to_out(zone)


@router.delete("/{ref}", status_code=204)
def delete_zone(ref: str, request: Request, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_ADMIN)) -> Response:
    zone = get_zone_for(session, ref, access)
    check_if_match(request, zone.version)
    if session.scalar(select(exists().where(DnsRecordRow.zone_id == zone.id, DnsRecordRow.system_id.is_not(None)))):
        raise InUse(f"DNS zone {zone.name} still holds records of systems; destroy them first")
    session.delete(zone)
    return Response(status_code=204)


@router.get("/{ref}/check", response_model=ZoneCheckOut)
def check(ref: str, request: Request, session: Session = SessionDep,
          access: Access = requires(Permission.ENV_READ)) -> dict:
    """Compare the zone on its server with the inventory: missing, stale and foreign records."""
    zone = get_zone_for(session, ref, access)
    try:
        return check_zone(session, zone, request.app.state.secret_box)
    except DnsUnavailable as exc:
        raise DnsServerUnavailable(str(exc), zone=zone.name) from None
    except DnsError as exc:
        raise DnsServerRefused(str(exc), zone=zone.name) from None


@records_router.get("", response_model=Page[DnsRecordOut])
def list_records(
    request: Request, response: Response, page: PageParams = Depends(),
    system: str | None = Query(None, max_length=253, description="System id or hostname"),
    zone: str | None = Query(None, max_length=20, description="Zone id"),
    session: Session = SessionDep, access: Access = requires(Permission.ENV_READ),
) -> dict:
    """The records Armillary registered for systems."""
    query = access.visible(select(DnsRecordRow).join(DnsZone), DnsZone.environment_id)
    if system is not None:
        query = query.where(DnsRecordRow.system_id == get_system(session, system, access).id)
    if zone is not None:
        query = query.where(DnsRecordRow.zone_id == get_zone_for(session, zone, access).id)
    items, next_url = paginate(session, query.options(selectinload(DnsRecordRow.zone)), DnsRecordRow, page,
                               request, response)
    names = hostnames(session, [row.system_id for row in items])
    return {"items": [_record_out(row, names) for row in items], "next": next_url}


def _record_out(row: DnsRecordRow, names: dict[int, str]) -> DnsRecordOut:
    hostname = names.get(row.system_id) if row.system_id else None
    return DnsRecordOut(zone={"id": row.zone.id, "name": row.zone.name},
                        system={"id": row.system_id, "name": hostname} if row.system_id else None,
                        name=row.name, type=row.rtype, values=list(row.values), ttl=row.ttl, updated_at=row.updated_at)

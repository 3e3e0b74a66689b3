"""A system's names in its environment's DNS zones: what should be there, registering it, removing it.

Forward zones get the system's A/AAAA records (name: its hostname inside the zone; a hostname with dots
outside the zone is not this zone's), CNAMEs for the variable ``dns_aliases`` (a list of names) and TXT
records for ``dns_txt`` (a list of strings); reverse zones (``in-addr.arpa``/``ip6.arpa``) get a PTR for
each of its addresses inside them. Every record is written with the owner ``system:<id>`` (the backends'
ownership marker), so a retry finds it already right and a record owned by something else is never
overwritten (a permanent failure naming the owner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.domain.models import System
from armillary.domain.variables import plain_values, resolve_system
from armillary.failures import PermanentFailure
from armillary.network.dns import backend_for
from armillary.network.dns.base import DnsBackend, DnsRecord, InvalidRecord, in_zone, reverse_name, txt_value
from armillary.network.models import DnsRecordRow, DnsZone

ALIASES_VARIABLE = "dns_aliases"
TXT_VARIABLE = "dns_txt"


def owner_of(system_id: int) -> str:
    return f"system:{system_id}"


def backend_of(zone: DnsZone, box: Any) -> DnsBackend:
    """The zone's backend with its settings, secrets decrypted."""
    config = {**(zone.config or {}), **box.decrypt(zone.secret_config), "zone": zone.name}
    return backend_for(zone.backend, config, zone.name)


def zones_of(session: Session, environment_id: int) -> list[DnsZone]:
    return list(session.scalars(select(DnsZone).where(DnsZone.environment_id == environment_id)
                                .order_by(DnsZone.reverse, DnsZone.id)))


def fqdn_in(zone_name: str, hostname: str) -> str | None:
    """The system's name in a forward zone: its hostname there, or None when it names another domain."""
    name = hostname.lower().rstrip(".") + "."
    if in_zone(name, zone_name):
        return name
    if "." in hostname.rstrip("."):
        return None
    return f"{name}{zone_name}"


def _listed(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def desired_records(zones: list[DnsZone], system: System, variables: dict[str, Any]) -> dict[int, list[DnsRecord]]:
    """Per zone id, the records ``system`` should have there."""
    forward = [z for z in zones if not z.reverse]
    primary = next((fqdn for z in forward if (fqdn := fqdn_in(z.name, system.hostname))), None)
    wanted: dict[int, list[DnsRecord]] = {}
    for zone in zones:
        records: list[DnsRecord] = []
        try:
            if zone.reverse:
                target = primary or system.hostname.rstrip(".") + "."
                for address in system.addresses or []:
                    ptr = _reverse(address)
                    if ptr and in_zone(ptr, zone.name):
                        records.append(DnsRecord(ptr, "PTR", zone.ttl, (target,)))
            elif (fqdn := fqdn_in(zone.name, system.hostname)) is not None:
                records += _forward(zone, fqdn, system, variables)
        except InvalidRecord as exc:
            raise PermanentFailure(f"DNS records of {system.hostname} in {zone.name}: {exc}") from None
        wanted[zone.id] = records
    return wanted


def _reverse(address: str) -> str | None:
    try:
        return reverse_name(address)
    except ValueError:
        return None


def _forward(zone: DnsZone, fqdn: str, system: System, variables: dict[str, Any]) -> list[DnsRecord]:
    v4 = tuple(a for a in system.addresses or [] if _reverse(a) and ":" not in a)
    v6 = tuple(a for a in system.addresses or [] if _reverse(a) and ":" in a)
    records = [DnsRecord(fqdn, "A", zone.ttl, v4)] if v4 else []
    records += [DnsRecord(fqdn, "AAAA", zone.ttl, v6)] if v6 else []
    for alias in _listed(variables.get(ALIASES_VARIABLE)):
        name = fqdn_in(zone.name, alias)
        if name is not None and name != fqdn:
            records.append(DnsRecord(name, "CNAME", zone.ttl, (fqdn,)))
    texts = _listed(variables.get(TXT_VARIABLE))
    if texts:
        records.append(DnsRecord(fqdn, "TXT", zone.ttl, tuple(txt_value(t) for t in texts)))
    return records


@dataclass
class _Plan:
    zones: dict[int, DnsZone]
    wanted: dict[int, list[DnsRecord]]
    existing: list[DnsRecordRow]


def _plan(runtime: Any, system_id: int) -> _Plan | None:
    with runtime.db.session() as session:
        system = session.get(System, system_id)
        if system is None:
            return None
        zones = zones_of(session, system.environment_id)
        existing = list(session.scalars(select(DnsRecordRow).where(DnsRecordRow.system_id == system_id)))
        if not zones and not existing:
            return None
        variables = plain_values(resolve_system(session, system)) if zones else {}
        wanted = desired_records(zones, system, variables)
        for row in existing:
            session.expunge(row)
        for zone in zones:
            session.expunge(zone)
        return _Plan({z.id: z for z in zones}, wanted, existing)


def register(runtime: Any, system_id: int) -> list[str]:
    """Make the zones hold exactly the system's records; what changed, one line each."""
    plan = _plan(runtime, system_id)
    if plan is None:
        return []
    owner, changes = owner_of(system_id), []
    backends = {zid: backend_of(zone, runtime.secret_box) for zid, zone in plan.zones.items()}
    try:
        _apply(runtime, system_id, plan, backends, owner, changes)
    finally:
        for backend in backends.values():
            backend.close()
    return changes


def _apply(runtime: Any, system_id: int, plan: _Plan, backends: dict[int, DnsBackend], owner: str,
           changes: list[str]) -> None:
    for zone_id, records in plan.wanted.items():
        for record in records:
            if backends[zone_id].ensure(record, owner):
                changes.append(f"registered {record.name} {record.type} {' '.join(record.values)}")
            _remember(runtime, zone_id, system_id, record)
    keep = {(zid, r.name, r.type) for zid, records in plan.wanted.items() for r in records}
    for row in plan.existing:
        if (row.zone_id, row.name, row.rtype) not in keep:
            changes += _remove(runtime, row, backends.get(row.zone_id), owner)


def unregister(runtime: Any, system_id: int) -> list[str]:
    """Remove every record registered for the system; what was removed."""
    with runtime.db.session() as session:
        rows = list(session.scalars(select(DnsRecordRow).where(DnsRecordRow.system_id == system_id)))
        for row in rows:
            session.expunge(row)
    owner, changes = owner_of(system_id), []
    for row in rows:
        backend = backend_of(row.zone, runtime.secret_box)
        try:
            changes += _remove(runtime, row, backend, owner)
        finally:
            backend.close()
    return changes


def _remove(runtime: Any, row: DnsRecordRow, backend: DnsBackend | None, owner: str) -> list[str]:
    removed = backend.remove(row.name, row.rtype, owner) if backend is not None else False
    with runtime.db.session() as session:
        session.query(DnsRecordRow).filter(DnsRecordRow.id == row.id).delete()
    return [f"removed {row.name} {row.rtype}"] if removed else []


def _remember(runtime: Any, zone_id: int, system_id: int, record: DnsRecord) -> None:
    """Record what was registered (after the server has it: a crash in between re-registers, a no-op)."""
    with runtime.db.session() as session:
        row = session.scalar(select(DnsRecordRow).where(DnsRecordRow.zone_id == zone_id,
                                                        DnsRecordRow.name == record.name,
                                                        DnsRecordRow.rtype == record.type))
        if row is None:
            row = DnsRecordRow(zone_id=zone_id, name=record.name, rtype=record.type)
            session.add(row)
        row.system_id, row.values, row.ttl = system_id, list(record.values), record.ttl

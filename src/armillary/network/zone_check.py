"""A DNS zone compared with the inventory: what Armillary registered that is missing or different, what it
owns there that no system has any more (stale), and what someone else holds at a name a system uses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.domain.models import System
from armillary.domain.states import SystemState
from armillary.network.dns.base import DnsRecord
from armillary.network.dns_registration import backend_of, fqdn_in
from armillary.network.models import DnsRecordRow, DnsZone


def _out(record: DnsRecord | DnsRecordRow) -> dict[str, Any]:
    if isinstance(record, DnsRecordRow):
        return {"name": record.name, "type": record.rtype, "values": list(record.values), "owner": None}
    return {"name": record.name, "type": record.type, "values": list(record.values), "owner": record.owner}


def check_zone(session: Session, zone: DnsZone, box: Any) -> dict[str, Any]:
    backend = backend_of(zone, box)
    try:
        actual = {(r.name, r.type): r for r in backend.records()}
    finally:
        backend.close()
    expected = list(session.scalars(select(DnsRecordRow).where(DnsRecordRow.zone_id == zone.id,
                                                               DnsRecordRow.system_id.is_not(None))))
    missing, ok = [], 0
    for row in expected:
        found = actual.get((row.name, row.rtype))
        if found is None or sorted(found.values) != sorted(row.values):
            missing.append(_out(row))
        else:
            ok += 1
    known = {(row.name, row.rtype) for row in expected}
    stale = [_out(r) for key, r in sorted(actual.items())
             if r.owner and r.owner.startswith("system:") and key not in known]
    names = _inventory_names(session, zone)
    foreign = [_out(r) for key, r in sorted(actual.items())
               if key[0] in names and key not in known and not (r.owner or "").startswith("system:")
               and r.type not in ("SOA", "NS")]
    return {"zone": zone.name, "missing": missing, "stale": stale, "foreign": foreign, "ok": ok}


def _inventory_names(session: Session, zone: DnsZone) -> set[str]:
    """The names the environment's live systems use in the zone (forward zones only)."""
    if zone.reverse:
        return set()
    hostnames = session.scalars(select(System.hostname).where(
        System.environment_id == zone.environment_id, System.state != SystemState.DESTROYED.value))
    return {name for hostname in hostnames if (name := fqdn_in(zone.name, hostname))}

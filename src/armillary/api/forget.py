"""POST /api/v1/systems/{ref}/forget: drop a system's record and leave its machine running.

The opposite of adopting (``POST /hypervisors/{ref}/adopt``): the machine goes back to being unmanaged.
What Armillary made for the system goes (its DNS records, its quota charge, its record); the addresses
its machine holds stay taken, as reservations, because the machine still uses them. The driver is not
called: the machine keeps its tag, which a later adopt replaces (the tag then names no system).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import exists, select, update

from armillary.api.audit_trail import note
from armillary.api.lookups import get_system
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain import quotas
from armillary.domain.accounts import QuotaCharge
from armillary.domain.errors import Conflict, DomainError
from armillary.domain.jobs import TERMINAL_JOB, Job
from armillary.domain.models import System
from armillary.network import dns_registration
from armillary.network.models import AddressKind, IpAddress

router = APIRouter(prefix="/systems", tags=["systems"])


class DnsUnavailable(DomainError):
    status, slug, title = 502, "dns-error", "The DNS server answered with an error"


def forgotten_note(hostname: str, provider_id: str | None) -> str:
    """The note of the reservations left for the machine (an adopt of that machine takes them back)."""
    return f"machine of forgotten system {hostname} ({provider_id or 'no machine'})"


def _check_idle(session: Any, system: System) -> None:
    """409 while a job is under way on the system: it would act on a record that is going away."""
    busy = session.scalar(select(exists().where(
        Job.system_id == system.id, Job.status.not_in([s.value for s in TERMINAL_JOB]))))
    if busy:
        raise Conflict(f"system {system.hostname!r} has a job under way; wait for it (or cancel it) first",
                       state=system.state)


def _drop_record(session: Any, system: System) -> dict[str, Any]:
    """Turn its addresses into reservations, give back its quota, delete the row; what was done."""
    text = forgotten_note(system.hostname, system.provider_id)
    held = list(session.scalars(select(IpAddress.address).where(IpAddress.system_id == system.id)))
    session.execute(update(IpAddress).where(IpAddress.system_id == system.id)
                    .values(system_id=None, kind=AddressKind.RESERVED, note=text[:1000]))
    charged = session.get(QuotaCharge, system.id) is not None
    quotas.release(session, system.id)
    session.delete(system)
    return {"addresses_reserved": held, "reservation_note": text if held else None, "quota_released": charged}


@router.post("/{ref}/forget", responses={409: {"description": "a job is under way on the system"}})
def forget_system(ref: str, request: Request, access: Access = requires(Permission.ENV_OPERATE)) -> dict:
    """Delete the system's record and leave its machine as it is (running or not): its DNS records are
    removed, the addresses the machine holds become reservations noted "machine of forgotten system
    <hostname> (<provider_id>)" (not freed: the machine still uses them), its quota is given back.
    The machine shows up again in ``GET /hypervisors/{ref}/unmanaged`` and can be adopted again.

    409 while a job is under way on the system; 502 when its DNS records cannot be removed (nothing is
    changed then: try again)."""
    note(request, action="system.forget")
    db = request.app.state.db
    with db.session() as session:
        system = get_system(session, ref, access)
        _check_idle(session, system)
        system_id = system.id
    try:
        removed = dns_registration.unregister(request.app.state.engine.runtime, system_id)
    except Exception as exc:  # noqa: BLE001 - any backend failure: the record stays, the caller retries
        raise DnsUnavailable(f"the DNS records of system {system_id} could not be removed: {exc}; "
                             "nothing was forgotten, try again") from None
    with db.session() as session:
        system = get_system(session, str(system_id), access)
        _check_idle(session, system)  # a job started meanwhile
        answer = {"id": system.id, "hostname": system.hostname, "provider_id": system.provider_id,
                  "hypervisor": system.hypervisor.name if system.hypervisor else None,
                  "dns_removed": removed}
        answer.update(_drop_record(session, system))
    return answer

"""Talking to a hypervisor from the API: test its connection, find machines Armillary does not manage,
and adopt them as systems."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.audit_trail import note
from armillary.api.deps import resolve_ref
from armillary.api.lookups import check_hostname_free, get_hypervisor_for
from armillary.api.security import Access, requires
from armillary.api.views import system_out
from armillary.auth.policy import Permission
from armillary.domain import quotas
from armillary.domain.errors import Conflict, DomainError, InvalidInput
from armillary.domain.models import Hypervisor, System, SystemLabel, SystemType
from armillary.domain.schemas import Hostname, Input, Labels, Ref
from armillary.domain.states import SystemState
from armillary.drivers.base import Capability, Driver, DriverError, MachineInfo, MachineState
from armillary.engine.connect import connect
from armillary.network import ipam
from armillary.network.models import AddressKind, IpAddress

router = APIRouter(prefix="/hypervisors", tags=["hypervisors"])


class HypervisorUnavailable(DomainError):
    status, slug, title = 502, "hypervisor-error", "The hypervisor answered with an error"


class AdoptUnsupported(Conflict):
    slug, title = "adopt-unsupported", "The driver cannot adopt machines"


def _driver(request: Request, hypervisor: Hypervisor) -> Driver:
    return connect(
        hypervisor_id=hypervisor.id, name=hypervisor.name, driver=hypervisor.driver, config=hypervisor.config,
        secret_config=hypervisor.secret_config, secret_box=request.app.state.secret_box,
        runtime=request.app.state.engine.runtime,
    )


@router.get("/{ref}/check")
async def check_hypervisor(ref: str, request: Request, access: Access = requires(Permission.ENV_OPERATE)) -> dict:
    """Connect with the stored settings and credentials; ``ok`` false with the driver's message if it fails."""
    with request.app.state.db.session() as session:
        hypervisor = get_hypervisor_for(session, ref, access)
        session.expunge(hypervisor)
    try:
        message = await run_in_threadpool(lambda: _driver(request, hypervisor).check())
    except DriverError as exc:
        return {"ok": False, "hypervisor": hypervisor.name, "driver": hypervisor.driver, "message": str(exc),
                "transient": exc.transient}
    return {"ok": True, "hypervisor": hypervisor.name, "driver": hypervisor.driver, "message": message}


@router.get("/{ref}/unmanaged")
async def unmanaged_machines(ref: str, request: Request, access: Access = requires(Permission.ENV_OPERATE)) -> dict:
    """Machines the hypervisor holds that no Armillary system owns (untagged, or tagged with an unknown id)."""
    with request.app.state.db.session() as session:
        hypervisor = get_hypervisor_for(session, ref, access)
        session.expunge(hypervisor)
    try:
        machines = await run_in_threadpool(lambda: _driver(request, hypervisor).list())
    except DriverError as exc:
        raise HypervisorUnavailable(
            f"hypervisor {hypervisor.name!r} could not list its machines: {exc}", transient=exc.transient
        ) from None
    with request.app.state.db.session() as session:
        unmanaged = _unmanaged(session, hypervisor, machines)
    return {"hypervisor": hypervisor.name, "items": [m.as_dict() for m in unmanaged]}


def _unmanaged(session: Session, hypervisor: Hypervisor, machines: list[MachineInfo]) -> list[MachineInfo]:
    """The machines no system of ``hypervisor`` holds: untagged, or tagged with an id none of its systems has."""
    ours = set(session.scalars(select(System.id).where(System.hypervisor_id == hypervisor.id)))
    return [m for m in machines if m.system_id is None or m.system_id not in ours]


# ---------------------------------------------------------------- adopting unmanaged machines

MAX_ADOPT = 100
# The note POST /systems/{ref}/forget gives the addresses a forgotten system's machine keeps using.
FORGOTTEN_PREFIX = "machine of forgotten system "
_NOT_HOSTNAME = re.compile(r"[^a-z0-9.-]+")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")


class AdoptMachine(Input):
    provider_id: str = Field(..., min_length=1, max_length=255, description="As GET /unmanaged lists it")
    hostname: Hostname | None = Field(None, description="Default: the machine's name, made a valid hostname")
    type: Ref | None = None
    labels: Labels | None = Field(None, max_length=100, description="Added to the labels of the machine's tags")


class AdoptRequest(Input):
    machines: list[AdoptMachine] = Field(..., max_length=MAX_ADOPT)


def hostname_for(machine: MachineInfo) -> str:
    """The machine's name as a hostname: lower case, letters, digits and '-' per dot-separated label; a name
    with nothing usable, or ending in an all-digit label (a Proxmox VMID), gets a ``machine-`` prefix."""
    name = machine.hostname or machine.details.get("name") or machine.provider_id
    parts = [p.strip("-")[:63].strip("-") for p in _NOT_HOSTNAME.sub("-", str(name).lower()).split(".")]
    hostname = ".".join(p for p in parts if p)[:253].strip(".-")
    if not hostname or hostname.rsplit(".", 1)[-1].isdigit():
        hostname = f"machine-{hostname}".strip(".-")[:63]
    return hostname


def labels_of(machine: MachineInfo) -> dict[str, str]:
    """The key/value tags a driver reports in the machine's details (docker's labels, EC2's tags...) that are
    valid labels; Armillary's own tags are left out."""
    found: dict[str, str] = {}
    for key in ("labels", "tags"):
        tags = machine.details.get(key)
        if not isinstance(tags, dict):
            continue
        for name, value in tags.items():
            text = str(value)
            if _LABEL_KEY.match(str(name)) and not str(name).lower().startswith("armillary") \
                    and len(text) <= 255 and text.isprintable():
                found[str(name)] = text
    return found


def _size(machine: MachineInfo, key: str) -> int | None:
    value = machine.details.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _new_systems(session: Session, hypervisor: Hypervisor, asked: list[AdoptMachine],
                 found: dict[str, MachineInfo], access: Access) -> list[System]:
    """One system per machine, committed with the caller's transaction before any driver call: hostnames
    free (409), types known (422), each charged to the caller's quota (403 over it)."""
    hypervisor = session.get(Hypervisor, hypervisor.id)
    systems, seen = [], set()
    for index, item in enumerate(asked):
        machine = found[item.provider_id]
        hostname = item.hostname or hostname_for(machine)
        if hostname in seen:
            raise Conflict(f"machines[{index}]: hostname {hostname!r} is asked for twice",
                           errors=[{"field": f"machines[{index}].hostname", "message": "duplicate"}])
        seen.add(hostname)
        check_hostname_free(session, hypervisor.environment_id, hostname)
        system_type = resolve_ref(session, SystemType, item.type, "type", "type") if item.type is not None else None
        labels = {**labels_of(machine), **(item.labels or {})}
        system = System(
            hostname=hostname, environment=hypervisor.environment, hypervisor=hypervisor, type=system_type,
            state=SystemState.CREATED.value, provider_id=machine.provider_id, provider_info=machine.as_dict(),
            addresses=list(machine.addresses), cpu=_size(machine, "cpu"), memory_mb=_size(machine, "memory_mb"),
            driver_props={}, variables={}, owner_id=access.principal.user_id,
            labels=[SystemLabel(key=k, value=v) for k, v in sorted(labels.items())],
        )
        session.add(system)
        session.flush()
        quotas.reserve(session, system)
        systems.append(system)
    return systems


def _reclaim_forgotten(session: Session, system: System) -> list[str]:
    """The reservations a forget left for this machine's addresses become the new system's again."""
    prefix, suffix = FORGOTTEN_PREFIX, f" ({system.provider_id})"
    rows = session.scalars(select(IpAddress).where(IpAddress.system_id.is_(None),
                                                   IpAddress.kind == AddressKind.RESERVED,
                                                   IpAddress.note.startswith(prefix)))
    taken = []
    for row in rows:
        if row.note.endswith(suffix) and row.pool.environment_id == system.environment_id:
            row.system_id, row.kind, row.note = system.id, AddressKind.OBSERVED, ""
            taken.append(row.address)
    return taken


def _adopted(request: Request, system_id: int, info: MachineInfo) -> dict[str, Any]:
    """Record what the driver's adopt said: the machine's id, state and addresses, in the IP pools too."""
    with request.app.state.db.session() as session:
        system = session.get(System, system_id)
        system.provider_id, system.provider_info = info.provider_id, info.as_dict()
        system.addresses = list(info.addresses)
        if info.state in (MachineState.STOPPED, MachineState.SUSPENDED):
            system.state = SystemState.STOPPED.value
        session.flush()
        _reclaim_forgotten(session, system)
        clashes = ipam.record_observed(session, system, list(info.addresses))
        session.flush()
        return {**system_out(system).model_dump(mode="json"), "address_clashes": clashes}


def _undo(request: Request, system_id: int) -> None:
    """The driver refused: the system made for the machine goes, and its quota charge with it."""
    with request.app.state.db.session() as session:
        quotas.release(session, system_id)
        system = session.get(System, system_id)
        if system is not None:
            session.delete(system)


@router.post("/{ref}/adopt")
def adopt_machines(ref: str, body: AdoptRequest, request: Request,
                   access: Access = requires(Permission.ENV_OPERATE)) -> dict:
    """Make systems (owned by the caller, state ``created``, or ``stopped`` for a stopped machine) of machines
    the hypervisor lists as unmanaged now, and tag each machine with its system's id through the driver, so
    every later action finds it. Hostnames default to the machines' names; labels come from the machines'
    tags (where the driver reports them) plus the given ones.

    Checked before any driver call: each machine is listed as unmanaged (422 naming it), hostnames are free
    (409) and the caller's quota holds them (403). A machine the driver then refuses to adopt (tagged by an
    existing system, a provider that cannot change tags) is listed under ``failed`` with the driver's words,
    and its system is not kept; the others are adopted."""
    note(request, action="hypervisor.adopt")
    with request.app.state.db.session() as session:
        hypervisor = get_hypervisor_for(session, ref, access)
        session.expunge(hypervisor)
    answer: dict[str, Any] = {"hypervisor": hypervisor.name, "adopted": [], "failed": []}
    if not body.machines:
        return answer
    ids = [m.provider_id for m in body.machines]
    for index, provider_id in enumerate(ids):
        if provider_id in ids[:index]:
            raise InvalidInput(f"machines[{index}].provider_id", f"{provider_id!r} is listed twice")
    driver = _driver(request, hypervisor)
    if Capability.ADOPT not in driver.capabilities:
        raise AdoptUnsupported(
            f"the {hypervisor.driver} driver of hypervisor {hypervisor.name!r} cannot adopt existing machines "
            "(it cannot tag a machine it did not make with a system's id)")
    try:
        machines = driver.list()
    except DriverError as exc:
        raise HypervisorUnavailable(
            f"hypervisor {hypervisor.name!r} could not list its machines: {exc}", transient=exc.transient
        ) from None
    with request.app.state.db.session() as session:
        found = {m.provider_id: m for m in _unmanaged(session, hypervisor, machines)}
        for index, provider_id in enumerate(ids):
            if provider_id not in found:
                raise InvalidInput(f"machines[{index}].provider_id",
                                   f"{provider_id!r} is not an unmanaged machine of hypervisor {hypervisor.name!r}")
        tagged = {m.system_id for m in found.values() if m.system_id is not None}
        existing = set(session.scalars(select(System.id).where(System.id.in_(tagged)))) if tagged else set()
        made = [(s.id, s.provider_id) for s in _new_systems(session, hypervisor, body.machines, found, access)]
    for system_id, provider_id in made:
        stale_tag = found[provider_id].system_id is not None and found[provider_id].system_id not in existing
        try:
            info = driver.adopt(provider_id, system_id, force=stale_tag)
        except DriverError as exc:
            _undo(request, system_id)
            answer["failed"].append({"provider_id": provider_id, "error": str(exc), "transient": exc.transient})
            continue
        except Exception:
            _undo(request, system_id)  # a driver bug: no system left naming an untagged machine
            raise
        answer["adopted"].append({**_adopted(request, system_id, info), "provider_id": info.provider_id})
    return answer

"""Quotas: a system's machine is charged to its owner's grant in its environment.

``reserve`` checks and takes in one conditional UPDATE of the grant's usage counters, so concurrent
creates can never overshoot (PostgreSQL re-checks the WHERE clause on the locked row; SQLite has one
writer at a time). A ``QuotaCharge`` row ties what was taken to the system, so giving back is exact
and happens once: in the transaction that records the machine gone (destroy, or a create undone),
or, for a create that never ran (cancelled while queued), the next time that grant is checked.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, exists, or_, select, update
from sqlalchemy.orm import Session

from armillary.domain.accounts import QuotaCharge, RoleGrant
from armillary.domain.errors import QuotaExceeded
from armillary.domain.jobs import TERMINAL_JOB, Job
from armillary.domain.models import System
from armillary.domain.states import SystemState

_grants = RoleGrant.__table__
_charges = QuotaCharge.__table__

# States in which a system holds no machine (a charge still there belongs to a create that never ran).
NO_MACHINE_STATES = (SystemState.DEFINED.value, SystemState.DESTROYED.value)


def _within(limit: Any, used: Any, add: int) -> Any:
    return or_(limit.is_(None), used + add <= limit)


# The owner's grant in the system's environment, unless the system is charged already: built once.
_UNCHARGED_GRANT = select(_grants.c.id).where(
    _grants.c.user_id == bindparam("b_user"), _grants.c.environment_id == bindparam("b_env"),
    ~exists().where(_charges.c.system_id == bindparam("b_system")))


def reserve(session: Session, system: System) -> None:
    """Charge ``system``'s size to its owner's quota, or raise 403 naming the limit and the usage."""
    if system.owner_id is None:
        return  # no owner to charge
    grant_id = session.scalar(_UNCHARGED_GRANT, {"b_user": system.owner_id, "b_env": system.environment_id,
                                                 "b_system": system.id})
    if grant_id is None:
        return  # the owner holds no role there (admins: nothing limits them), or it is charged (a retried create)
    release_stale(session, grant_id)
    cpu, memory = system.cpu or 0, system.memory_mb or 0
    taken = session.execute(
        update(_grants)
        .where(
            _grants.c.id == grant_id,
            _within(_grants.c.max_systems, _grants.c.used_systems, 1),
            _within(_grants.c.max_cpu, _grants.c.used_cpu, cpu),
            _within(_grants.c.max_memory_mb, _grants.c.used_memory_mb, memory),
        )
        .values(
            used_systems=_grants.c.used_systems + 1,
            used_cpu=_grants.c.used_cpu + cpu,
            used_memory_mb=_grants.c.used_memory_mb + memory,
        )
    ).rowcount
    if taken != 1:
        raise _exceeded(session.get_one(RoleGrant, grant_id, populate_existing=True), system, cpu, memory)
    session.execute(_charges.insert().values(system_id=system.id, grant_id=grant_id, cpu=cpu, memory_mb=memory))
    _expire_loaded(session, grant_id)


def _expire_loaded(session: Session, grant_id: int) -> None:
    """A grant this session holds shows its usage before the UPDATE: read it again when next used."""
    grant = session.identity_map.get(session.identity_key(RoleGrant, grant_id))
    if grant is not None:
        session.expire(grant)


def resize(session: Session, system: System) -> None:
    """Re-charge ``system`` after its size or owner changed, in the caller's transaction.

    Only a system that holds a charge (a machine, or a create accepted) is charged anew: a growth is
    taken with one conditional UPDATE like ``reserve`` (403 naming the limit when it does not fit), a
    shrink is given back; a new owner is charged in full and the old one given back."""
    charge = session.execute(select(_charges).where(_charges.c.system_id == system.id)).first()
    if charge is None:
        return
    grant = session.get(RoleGrant, charge.grant_id)
    if grant is None or grant.user_id != system.owner_id:
        release(session, system.id)
        reserve(session, system)
        return
    cpu, memory = (system.cpu or 0) - charge.cpu, (system.memory_mb or 0) - charge.memory_mb
    if cpu == 0 and memory == 0:
        return
    fits = [_within(_grants.c.max_cpu, _grants.c.used_cpu, cpu) if cpu > 0 else True,
            _within(_grants.c.max_memory_mb, _grants.c.used_memory_mb, memory) if memory > 0 else True]
    taken = session.execute(
        update(_grants).where(_grants.c.id == grant.id, *fits).values(
            used_cpu=_grants.c.used_cpu + cpu, used_memory_mb=_grants.c.used_memory_mb + memory)
    ).rowcount
    if taken != 1:
        session.refresh(grant)
        raise _exceeded(grant, system, max(cpu, 0), max(memory, 0), systems=0)
    session.execute(update(_charges).where(_charges.c.system_id == system.id).values(
        cpu=system.cpu or 0, memory_mb=system.memory_mb or 0))
    session.expire(grant)


def _exceeded(grant: RoleGrant, system: System, cpu: int, memory: int, systems: int = 1) -> QuotaExceeded:
    checks = [
        ("systems", grant.max_systems, grant.used_systems, systems),
        ("cpu", grant.max_cpu, grant.used_cpu, cpu),
        ("memory_mb", grant.max_memory_mb, grant.used_memory_mb, memory),
    ]
    over = [(name, limit, used, add) for name, limit, used, add in checks if limit is not None and used + add > limit]
    name, limit, used, add = over[0] if over else checks[0]
    owner = system.owner.name if system.owner is not None else f"user {system.owner_id}"
    return QuotaExceeded(
        f"quota exceeded: {owner} may hold {limit} {name} in environment {grant.environment.name!r}, "
        f"uses {used}, and {system.hostname} needs {add} more",
        limit=name, quota=limit, usage=used, requested=add,
        usage_all={"systems": grant.used_systems, "cpu": grant.used_cpu, "memory_mb": grant.used_memory_mb},
    )


def release(conn: Connection | Session, system_id: int) -> None:
    """Give back what ``system_id`` holds, in the caller's transaction (nothing if it holds nothing)."""
    charge = conn.execute(
        delete(_charges).where(_charges.c.system_id == system_id)
        .returning(_charges.c.grant_id, _charges.c.cpu, _charges.c.memory_mb)
    ).first()
    if charge is None:
        return
    conn.execute(
        update(_grants).where(_grants.c.id == charge.grant_id).values(
            used_systems=_grants.c.used_systems - 1,
            used_cpu=_grants.c.used_cpu - charge.cpu,
            used_memory_mb=_grants.c.used_memory_mb - charge.memory_mb,
        )
    )


def _unused(system_id: Any) -> Any:
    """The system holds no machine and no job is under way on it: a charge on it is left over."""
    busy = exists().where(Job.system_id == system_id, Job.status.not_in([s.value for s in TERMINAL_JOB]))
    idle = select(System.id).where(System.id == system_id, System.state.in_(NO_MACHINE_STATES),
                                   System.provider_id.is_(None))
    return and_(exists(idle), ~busy)


def release_stale(session: Session, grant_id: int) -> None:
    """Give back charges of systems with no machine and no job under way (a create cancelled before it ran)."""
    stale = session.scalars(
        select(_charges.c.system_id).where(_charges.c.grant_id == grant_id, _unused(_charges.c.system_id))
    ).all()
    for system_id in stale:
        release(session, system_id)


def release_if_unused(session: Session, system_id: int) -> None:
    """Give back ``system_id``'s charge if it turned out to hold nothing (called when a job is cancelled)."""
    if session.scalar(select(_unused(system_id))):
        release(session, system_id)

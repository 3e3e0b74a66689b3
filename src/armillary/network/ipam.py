"""IP address management: pools, and addresses taken out of them atomically.

Taking an address is an INSERT that the unique key (pool, ordinal) lets through once: two creates racing
for the same address both try, one wins, the other looks again (a savepoint keeps the caller's
transaction). The candidate is the address after the highest one handed out (so a released address
rests before it is reused, as DHCP servers do), wrapping to the lowest free one at the end of the range.

An address is tied to its system: taken by the create step before the driver call, given back when
the machine is gone (destroy, a create undone or failed before it made a machine). What a crash leaves
(a system with no machine and no job under way still holding an address) is given back lazily, by
``release_stale``, before a pool is called exhausted and when a pool's use is read.
"""

from __future__ import annotations

import ipaddress
import random
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, event, exists, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from armillary.domain.errors import Conflict, InvalidInput
from armillary.domain.jobs import TERMINAL_JOB, Job
from armillary.domain.models import System, utcnow
from armillary.drivers.base import AddressAssignment
from armillary.network.models import AddressKind, IpAddress, IpPool

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_ORDINAL = 2**63 - 1  # ordinals are BIGINT
ATTEMPTS = 64  # racing allocations looked again before giving up (each loss means another got an address)
SPREAD = 16  # how far past the highest address an allocation that lost a race looks (fewer repeats)

_addresses = IpAddress.__table__


class PoolExhausted(Conflict):
    slug, title = "pool-exhausted", "IP pool exhausted"


class AddressTaken(Conflict):
    slug, title = "address-taken", "Address already taken"


# ---------------------------------------------------------------- pool shape


@dataclass(frozen=True)
class PoolShape:
    """A pool's network and allocation range, checked."""

    network: IpNetwork
    first_offset: int
    last_offset: int

    @property
    def size(self) -> int:
        return self.last_offset - self.first_offset + 1


def network_of(cidr: str, field: str = "cidr") -> IpNetwork:
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise InvalidInput(field, f"not a network in CIDR notation ({exc})") from None


def address_in(network: IpNetwork, value: str, field: str) -> IpAddr:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise InvalidInput(field, f"not an IP address: {value!r}") from None
    if address not in network:
        raise InvalidInput(field, f"{address} is not in {network}")
    return address


def pool_shape(cidr: str, range_start: str | None, range_end: str | None) -> PoolShape:
    """The allocation range: by default every host address of the network (IPv4 without its network and
    broadcast addresses; IPv6 without the subnet-router anycast address)."""
    network = network_of(cidr)
    base = int(network.network_address)
    if network.version == 4 and network.prefixlen <= 30:
        first, last = 1, network.num_addresses - 2
    elif network.version == 6 and network.prefixlen <= 126:
        first, last = 1, network.num_addresses - 1
    else:
        first, last = 0, network.num_addresses - 1
    if range_start is not None:
        first = int(address_in(network, range_start, "range_start")) - base
    if range_end is not None:
        last = int(address_in(network, range_end, "range_end")) - base
    if first > last:
        raise InvalidInput("range_end", "the allocation range ends before it starts")
    return PoolShape(network, first, min(last, MAX_ORDINAL))


def ordinal_of(pool: IpPool, address: IpAddr) -> int:
    return int(address) - int(ipaddress.ip_network(pool.cidr).network_address)


def address_at(pool: IpPool, ordinal: int) -> str:
    return str(ipaddress.ip_network(pool.cidr).network_address + ordinal)


def check_no_overlap(session: Session, environment_id: int, network: IpNetwork, exclude_id: int | None = None) -> None:
    """Two pools of one environment may not share an address (which pool would own it?)."""
    for pool in session.scalars(select(IpPool).where(IpPool.environment_id == environment_id)):
        if pool.id == exclude_id:
            continue
        other = ipaddress.ip_network(pool.cidr)
        if other.version == network.version and other.overlaps(network):
            raise Conflict(f"{network} overlaps pool {pool.name!r} ({other}) of the same environment",
                           pool=pool.name)


# ---------------------------------------------------------------- taking and giving back


def holder_of(session: Session, row: IpAddress) -> str:
    if row.system_id is None:
        return f"a reservation ({row.note})" if row.note else "a reservation"
    hostname = session.scalar(select(System.hostname).where(System.id == row.system_id))
    return f"system {hostname} (id {row.system_id})"


def take(session: Session, pool: IpPool, address: IpAddr, *, kind: str, system_id: int | None,
         note: str = "", actor: str | None = None) -> IpAddress:
    """Take exactly ``address`` out of ``pool``; 409 naming its holder when it is taken."""
    ordinal = ordinal_of(pool, address)
    existing = session.scalar(select(IpAddress).where(IpAddress.pool_id == pool.id, IpAddress.ordinal == ordinal))
    if existing is not None:
        if system_id is not None and existing.system_id == system_id:
            return existing  # a retry: it is already this system's
        raise AddressTaken(f"{address} is held by {holder_of(session, existing)}", address=str(address),
                           holder_system_id=existing.system_id)
    try:
        with session.begin_nested():
            row = IpAddress(pool_id=pool.id, ordinal=ordinal, address=str(address), kind=kind,
                            system_id=system_id, note=note, created_by=actor)
            session.add(row)
    except IntegrityError:
        return take(session, pool, address, kind=kind, system_id=system_id, note=note, actor=actor)
    return row


def allocate(session: Session, pool: IpPool, system_id: int | None, *, kind: str = AddressKind.ALLOCATED,
             note: str = "", actor: str | None = None) -> IpAddress:
    """The next free address of ``pool`` for ``system_id`` (409 ``pool-exhausted`` when there is none).

    First the address after the highest one handed out, inserted blind (the common case: one query to
    find it, one to take it); when that one is taken, a search for the lowest free one."""
    _lock_pool(session, pool.id)
    values = {"pool_id": pool.id, "kind": kind, "system_id": system_id, "note": note, "created_by": actor}
    ordinal, searched = _pending(session, pool, _after_highest(session, pool)), False
    for attempt in range(ATTEMPTS):
        if ordinal is not None:
            row_id = session.execute(_insert_unless_taken(session).values(
                ordinal=ordinal, address=address_at(pool, ordinal), created_at=utcnow(), **values)).scalar()
            if row_id is not None:
                return session.get(IpAddress, row_id)
            if searched:  # what the search found free was taken since: a race; step away from the others
                ordinal = _pending(session, pool, _after_highest(session, pool, random.randrange(1, SPREAD)))
                if ordinal is not None:
                    continue
        ordinal, searched = _pending(session, pool, _candidate(session, pool)), True
        if ordinal is None and attempt == 0 and release_stale(session, pool.id):
            ordinal = _pending(session, pool, _candidate(session, pool))
        if ordinal is None:
            raise PoolExhausted(f"pool exhausted: {pool.name} ({pool.cidr}) has no free address", pool=pool.name)
    raise PoolExhausted(f"pool {pool.name} is too contended: no free address found in {ATTEMPTS} tries",
                        pool=pool.name)


def _insert_unless_taken(session: Session) -> Any:
    """INSERT … ON CONFLICT (pool, ordinal) DO NOTHING RETURNING id: a taken address answers no row,
    with no error to roll back (no savepoint round trips)."""
    dialect = session.get_bind().dialect.name
    statement = (postgresql.insert(_addresses) if dialect == "postgresql" else sqlite.insert(_addresses))
    return statement.on_conflict_do_nothing(index_elements=["pool_id", "ordinal"]).returning(_addresses.c.id)


_SQLITE_TURN = threading.Lock()
# PostgreSQL: the addresses this process's open transactions are inserting, by pool. Another allocation of
# this process skips them instead of waiting on the unique key for the first one to commit.
_PENDING: dict[int, set[int]] = {}
_PENDING_LOCK = threading.Lock()


def _lock_pool(session: Session, pool_id: int) -> None:
    """On SQLite, allocations take turns until their transaction ends, so the search sees every address given
    so far: a lock in this process (SQLite is one process by design; a first-come-first-served lock was
    measured slower at 8 clients: its wake-ups cost more than the order gains), released when
    the session's transaction ends; without it the writers would queue in SQLite's busy handler, which
    sleeps up to 100 ms between tries. PostgreSQL: none (see ``_pending``)."""
    if session.get_bind().dialect.name != "sqlite" or session.info.get("ipam_turn"):
        return
    if not _SQLITE_TURN.acquire(timeout=30):
        raise PoolExhausted("IP allocation is busy: no turn within 30 s")
    session.info["ipam_turn"] = True
    _on_transaction_end(session)


def _pending(session: Session, pool: IpPool, ordinal: int | None) -> int | None:
    """PostgreSQL: ``ordinal``, or the first one after it that no open transaction of this process is
    inserting, marked as being inserted until the session's transaction ends. Across processes the unique key
    settles a collision (the loser's insert answers no row and it looks again)."""
    if ordinal is None or session.get_bind().dialect.name == "sqlite":
        return ordinal
    with _PENDING_LOCK:
        taken = _PENDING.setdefault(pool.id, set())
        while ordinal in taken:
            ordinal += 1
        if ordinal > pool.last_offset:
            return None
        taken.add(ordinal)
    session.info.setdefault("ipam_pending", []).append((pool.id, ordinal))
    _on_transaction_end(session)
    return ordinal


def _on_transaction_end(session: Session) -> None:
    if session.info.get("ipam_listening"):
        return
    session.info["ipam_listening"] = True

    def done(session: Session, transaction: Any) -> None:
        if transaction.parent is not None:
            return
        if session.info.pop("ipam_turn", False):
            _SQLITE_TURN.release()
        pending = session.info.pop("ipam_pending", [])
        if pending:
            with _PENDING_LOCK:
                for pool_id, ordinal in pending:
                    _PENDING.get(pool_id, set()).discard(ordinal)

    event.listen(session, "after_transaction_end", done)


def _taken(pool_id: int, ordinal: Any) -> Any:
    return exists().where(_addresses.c.pool_id == pool_id, _addresses.c.ordinal == ordinal)


def _after_highest(session: Session, pool: IpPool, spread: int = 0) -> int | None:
    """The address after the highest one handed to a system, ``spread`` further (None past the range)."""
    highest = session.scalar(
        select(func.max(_addresses.c.ordinal)).where(
            _addresses.c.pool_id == pool.id, _addresses.c.kind != AddressKind.RESERVED,
            _addresses.c.ordinal.between(pool.first_offset, pool.last_offset)))
    start = pool.first_offset if highest is None else highest + 1
    return start + spread if start + spread <= pool.last_offset else None


def _candidate(session: Session, pool: IpPool) -> int | None:
    """A free address: after the highest one handed out; at the end of the range, the lowest free one."""
    start = _after_highest(session, pool)
    found = _free_from(session, pool, start) if start is not None else None
    if found is None and start != pool.first_offset:
        found = _free_from(session, pool, pool.first_offset)
    return found


def _free_from(session: Session, pool: IpPool, start: int) -> int | None:
    """The lowest free ordinal ≥ ``start`` in the range: ``start`` itself, or the end of the run of taken ones."""
    if not session.scalar(select(_taken(pool.id, start))):
        return start
    a = _addresses.alias("a")
    b = _addresses.alias("b")
    gap = session.scalar(
        select(func.min(a.c.ordinal + 1)).where(
            a.c.pool_id == pool.id, a.c.ordinal >= start, a.c.ordinal < pool.last_offset,
            ~exists().where(b.c.pool_id == pool.id, b.c.ordinal == a.c.ordinal + 1)))
    return gap


def release_system(session: Any, system_id: int) -> int:
    """Give back every address ``system_id`` holds (in the caller's transaction); how many."""
    return session.execute(
        delete(_addresses).where(_addresses.c.system_id == system_id,
                                 _addresses.c.kind.in_(AddressKind.HELD_BY_SYSTEMS))
    ).rowcount


def _stale() -> Any:
    """Held by a system that has no machine and no job under way: what a crash or a failed create left."""
    busy = exists().where(Job.system_id == _addresses.c.system_id,
                          Job.status.not_in([s.value for s in TERMINAL_JOB]))
    idle = exists().where(System.id == _addresses.c.system_id, System.provider_id.is_(None))
    return and_(_addresses.c.kind.in_(AddressKind.HELD_BY_SYSTEMS), idle, ~busy)


def release_stale(session: Session, pool_id: int | None = None) -> int:
    """Give back the addresses of systems that hold no machine and run no job; how many."""
    statement = delete(_addresses).where(_stale())
    if pool_id is not None:
        statement = statement.where(_addresses.c.pool_id == pool_id)
    return session.execute(statement.execution_options(synchronize_session=False)).rowcount


# ---------------------------------------------------------------- which pools serve a system


def pools_for(session: Session, environment_id: int, hypervisor_id: int | None) -> list[IpPool]:
    """The auto-assigning pools that serve a system: its hypervisor's first, then its environment's."""
    pools = session.scalars(
        select(IpPool).where(IpPool.environment_id == environment_id, IpPool.auto_assign.is_(True))
        .order_by(IpPool.id)).all()
    own = [p for p in pools if p.hypervisor_id is not None and p.hypervisor_id == hypervisor_id]
    shared = [p for p in pools if p.hypervisor_id is None]
    return own + shared


def pool_containing(session: Session, environment_id: int, address: IpAddr) -> IpPool | None:
    for pool in session.scalars(select(IpPool).where(IpPool.environment_id == environment_id)):
        if address in ipaddress.ip_network(pool.cidr):
            return pool
    return None


def held_by(session: Session, system_id: int) -> list[IpAddress]:
    return list(session.scalars(select(IpAddress).where(IpAddress.system_id == system_id).order_by(IpAddress.id)))


def assignment(row: IpAddress) -> AddressAssignment:
    pool = row.pool
    return AddressAssignment(
        address=row.address, prefix_length=ipaddress.ip_network(pool.cidr).prefixlen, gateway=pool.gateway,
        dns_servers=tuple(pool.dns_servers or ()), network=pool.network_name, vlan=pool.vlan)


def static_requests(addresses: list[str]) -> list[IpAddr]:
    found = []
    for value in addresses or []:
        try:
            found.append(ipaddress.ip_address(value))
        except ValueError:
            continue  # a name, not an address: not the pools' business
    return found


def reserve_for_system(session: Session, system: System) -> list[IpAddress]:
    """The addresses ``system``'s create gives its machine, taken now (a retry finds its own again).

    Each address the system asks for (``machine.addresses``) that lies in a pool of its environment is
    taken exactly (409 naming the holder); for each IP version it has none of, one comes from the first
    auto-assigning pool serving it (409 ``pool-exhausted`` when that pool is full)."""
    rows = {row.address: row for row in held_by(session, system.id)}
    for address in static_requests(system.addresses):
        pool = pool_containing(session, system.environment_id, address)
        if pool is not None and str(address) not in rows:
            rows[str(address)] = take(session, pool, address, kind=AddressKind.STATIC, system_id=system.id)
    versions = {ipaddress.ip_address(a).version for a in rows}
    for pool in pools_for(session, system.environment_id, system.hypervisor_id):
        if pool.ip_version not in versions:
            row = allocate(session, pool, system.id)
            rows[row.address] = row
            versions.add(pool.ip_version)
    return list(rows.values())


def check_can_reserve(session: Session, system: System) -> None:
    """Before a create is accepted: its static addresses are free and its pools are not full (409 else).

    Takes nothing: the create step takes the addresses (a race between two requests is settled there)."""
    if any(row.system_id == system.id for row in held_by(session, system.id)):
        return
    for address in static_requests(system.addresses):
        pool = pool_containing(session, system.environment_id, address)
        if pool is None:
            continue
        row = session.scalar(select(IpAddress).where(IpAddress.pool_id == pool.id,
                                                     IpAddress.ordinal == ordinal_of(pool, address)))
        if row is not None and row.system_id != system.id:
            raise AddressTaken(f"{address} is held by {holder_of(session, row)}", address=str(address),
                               holder_system_id=row.system_id)
    wanted = {a.version for a in static_requests(system.addresses)}
    for pool in pools_for(session, system.environment_id, system.hypervisor_id):
        if pool.ip_version in wanted:
            continue
        wanted.add(pool.ip_version)
        if _candidate(session, pool) is None and not release_stale(session, pool.id):
            raise PoolExhausted(f"pool exhausted: {pool.name} ({pool.cidr}) has no free address", pool=pool.name)


def record_observed(session: Session, system: System, addresses: list[str]) -> list[str]:
    """Record the addresses a driver chose itself that fall in a pool (the ssh driver's host); the
    machine exists already, so an address held by another is reported back, not refused."""
    clashes = []
    for address in static_requests(addresses):
        pool = pool_containing(session, system.environment_id, address)
        if pool is None:
            continue
        try:
            take(session, pool, address, kind=AddressKind.OBSERVED, system_id=system.id)
        except AddressTaken as exc:
            clashes.append(exc.detail)
    return clashes


# ---------------------------------------------------------------- reading a pool's use


def utilization(session: Session, pool: IpPool) -> dict[str, Any]:
    counts = dict(session.execute(
        select(_addresses.c.kind, func.count()).where(
            _addresses.c.pool_id == pool.id, _addresses.c.ordinal.between(pool.first_offset, pool.last_offset))
        .group_by(_addresses.c.kind)).all())
    used = sum(counts.values())
    size = pool.last_offset - pool.first_offset + 1
    return {"size": size, "used": used, "free": size - used,
            "percent": round(100.0 * used / size, 2) if size else 100.0,
            "by_kind": {kind: counts.get(kind, 0) for kind in
                        (AddressKind.ALLOCATED, AddressKind.STATIC, AddressKind.OBSERVED, AddressKind.RESERVED)}}


def free_ranges(session: Session, pool: IpPool, limit: int = 100) -> list[dict[str, Any]]:
    """The first ``limit`` runs of free addresses in the allocation range, lowest first."""
    taken = session.scalars(
        select(_addresses.c.ordinal).where(
            _addresses.c.pool_id == pool.id, _addresses.c.ordinal.between(pool.first_offset, pool.last_offset))
        .order_by(_addresses.c.ordinal)).all()
    runs, cursor = [], pool.first_offset
    for ordinal in [*taken, pool.last_offset + 1]:
        if ordinal > cursor:
            runs.append({"first": address_at(pool, cursor), "last": address_at(pool, ordinal - 1),
                         "count": ordinal - cursor})
            if len(runs) >= limit:
                break
        cursor = max(cursor, ordinal + 1)
    return runs

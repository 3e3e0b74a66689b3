"""What a machine's lifecycle does with addresses and names: called by the lifecycle workflows.

* before a create's driver call: take the system's addresses (``addresses_for_create``), so the driver is
  told them; a driver without the ``static_address`` capability is never given any, and a system asking
  for an address in a pool on such a driver fails before the call, instead of getting another address;
* after the machine runs: record the addresses such a driver chose itself that fall in a pool (the ssh
  driver's host), and register the system's names (``after_create``);
* at destroy: remove the names first, then (after the machine is gone) give the addresses back.

Network calls (DNS) run with no database session open; the records registered are kept in
``dns_records``, so a destroy removes exactly those and the zone check knows what to expect.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, exists, or_, select
from sqlalchemy.orm import Session

from armillary.domain.errors import Conflict
from armillary.domain.models import System
from armillary.domain.prepared import Prepared, run
from armillary.drivers.base import AddressAssignment, Capability, Driver
from armillary.drivers.registry import UnknownDriver, get_driver
from armillary.failures import PermanentFailure
from armillary.network import dns_registration, ipam
from armillary.network.models import DnsRecordRow, DnsZone, IpPool


class StaticAddressUnsupported(Conflict):
    slug, title = "static-address-unsupported", "The driver cannot give a machine a chosen address"


def _pooled_requests(session: Session, system: System) -> list[str]:
    return [str(a) for a in ipam.static_requests(system.addresses)
            if ipam.pool_containing(session, system.environment_id, a) is not None]


def _refuse_static(driver_name: str, requested: list[str]) -> StaticAddressUnsupported:
    return StaticAddressUnsupported(
        f"the {driver_name} driver cannot give a machine a chosen address (it lacks the static_address "
        f"capability), so {', '.join(requested)} would not be honoured; remove it from machine.addresses "
        "or use a driver that can", addresses=requested)


def check_create(session: Session, system: System) -> None:
    """Before a create is accepted (the API): 409 when it could not get its addresses.

    An environment without pools (most) has no address to check: one indexed query says so."""
    if system.hypervisor_id is None or not _has_pools(session, system.environment_id):
        return
    try:
        driver = get_driver(system.hypervisor.driver)
    except UnknownDriver:
        return  # the create's own step says so
    if Capability.STATIC_ADDRESS in driver.capabilities:
        ipam.check_can_reserve(session, system)
        return
    requested = _pooled_requests(session, system)
    if requested:
        raise _refuse_static(driver.name, requested)


def _has_pools(conn: Connection | Session, environment_id: int) -> bool:
    return bool(run(conn, _HAS_POOLS, {"env": environment_id}).scalar())


def _uses(ctx: Any, system: Any) -> Any:
    """Whether the system's environment has IP pools (``pools``) and the system DNS names (``names``):
    one read per step attempt (a create asks both, before and after its driver call), kept in ``ctx.memo``.
    A pool or a zone made meanwhile is seen by the next action, as it was when made a moment later."""
    key = ("network.machines", system.environment_id, system.id)
    found = ctx.memo.get(key)
    if found is None:
        with ctx.runtime.db.engine.connect() as conn:
            found = run(conn, _USES, {"env": system.environment_id, "system": system.id}).one()
        ctx.memo[key] = found
    return found


# Compiled once (``domain.prepared``): every create and destroy asks.
_HAS_POOLS = Prepared(select(exists().where(IpPool.environment_id == bindparam("env"))))
_USES = Prepared(select(
    exists().where(IpPool.environment_id == bindparam("env")).label("pools"),
    or_(exists().where(DnsZone.environment_id == bindparam("env")),
        exists().where(DnsRecordRow.system_id == bindparam("system"))).label("names"),
))


def addresses_for_create(ctx: Any, driver: Driver, system: Any) -> tuple[AddressAssignment, ...]:
    """Take the create's addresses (a retry finds those it took already) and say them to the driver."""
    if not _uses(ctx, system).pools:
        return ()
    with ctx.runtime.db.session() as session:
        system = session.get(System, ctx.system_id)
        if Capability.STATIC_ADDRESS not in driver.capabilities:
            requested = _pooled_requests(session, system)
            if requested:
                raise PermanentFailure(_refuse_static(driver.name, requested).detail)
            return ()
        try:
            rows = ipam.reserve_for_system(session, system)
        except Conflict as exc:  # pool exhausted, address taken: nothing was asked of the driver
            raise PermanentFailure(exc.detail) from None
        assignments = tuple(ipam.assignment(row) for row in rows)
    for item in assignments:
        ctx.log(f"address {item.cidr} for {ctx.context.get('hostname', 'the machine')}")
    return assignments


def after_create(ctx: Any, driver: Driver, system: Any, addresses: list[str]) -> dict[str, Any]:
    """The machine runs: record the addresses a driver chose itself, register the system's names."""
    if Capability.STATIC_ADDRESS not in driver.capabilities and addresses and _uses(ctx, system).pools:
        with ctx.runtime.db.session() as session:
            clashes = ipam.record_observed(session, session.get(System, ctx.system_id), addresses)
        for clash in clashes:
            ctx.log(f"address reported by the driver is already recorded: {clash}", level="warning")
    return register_names(ctx, system)


def register_names(ctx: Any, system: Any) -> dict[str, Any]:
    if not _uses(ctx, system).names:
        return {}
    changes = dns_registration.register(ctx.runtime, ctx.system_id)
    for line in changes:
        ctx.log(line)
    return {"dns": changes} if changes else {}


def before_destroy(ctx: Any, system: Any) -> None:
    """Names go before the machine: a name never points at an address about to be reused."""
    if not _uses(ctx, system).names:
        return
    for line in dns_registration.unregister(ctx.runtime, ctx.system_id):
        ctx.log(line)


def release_addresses(ctx: Any) -> None:
    """The machine is gone (or was never made): its addresses go back to their pools."""
    with ctx.runtime.db.engine.begin() as conn:  # one DELETE: no ORM session needed
        count = ipam.release_system(conn, ctx.system_id)
    if count:
        ctx.log(f"gave back {count} address{'es' if count > 1 else ''}")

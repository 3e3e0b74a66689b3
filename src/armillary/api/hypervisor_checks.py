"""Talking to a hypervisor from the API: test its connection, find machines Armillary does not manage."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from armillary.api.lookups import get_hypervisor_for
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import DomainError
from armillary.domain.models import Hypervisor, System
from armillary.drivers.base import Driver, DriverError
from armillary.engine.connect import connect

router = APIRouter(prefix="/hypervisors", tags=["hypervisors"])


class HypervisorUnavailable(DomainError):
    status, slug, title = 502, "hypervisor-error", "The hypervisor answered with an error"


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
        ours = set(session.scalars(select(System.id).where(System.hypervisor_id == hypervisor.id)))
    return {
        "hypervisor": hypervisor.name,
        "items": [m.as_dict() for m in machines if m.system_id is None or m.system_id not in ours],
    }

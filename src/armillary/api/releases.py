"""GET /api/v1/systems/{ref}/releases: the releases of a system's project, read on the machine itself.

The project (``project``, ``root``) comes from the system's ``deploy`` variable, as for a deploy
(``armillary.workflows.deploy``); the query parameters ``project`` and ``root`` override it. The listing is
read through the system's transport (``<root>/<project>/releases``, ``current``, ``archives``), newest
first; a simulated machine has none (``simulated: true``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session

from armillary.api.deps import SessionDep
from armillary.api.lookups import get_system
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import Conflict, InvalidInput
from armillary.domain.variables import plain_values, resolve_system
from armillary.drivers.base import DriverError
from armillary.engine.context import StepContext
from armillary.failures import Failure
from armillary.workflows import deploy

router = APIRouter(prefix="/systems", tags=["actions"])
log = logging.getLogger("armillary.api.releases")
LISTING_TIMEOUT_S = 60.0


class ReleaseOut(BaseModel):
    id: str
    current: bool


class ArchiveOut(BaseModel):
    id: str
    failed: bool


class ReleasesOut(BaseModel):
    system_id: int
    project: str | None
    project_dir: str | None
    current: str | None
    releases: list[ReleaseOut]
    archives: list[ArchiveOut]
    simulated: bool = False


class _ReadContext(StepContext):
    """A step context outside any job (for the transport): its log goes to the server log."""

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        log.log(logging.WARNING if level in {"warning", "error"} else logging.DEBUG, message)


@router.get("/{ref}/releases", response_model=ReleasesOut,
            responses={409: {"description": "the machine cannot be reached or has no deploy configuration"}})
def list_releases(
    ref: str,
    request: Request,
    project: str | None = Query(None, max_length=100),
    root: str | None = Query(None, max_length=1024),
    session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> ReleasesOut:
    """Which releases the system has, which one is ``current``, and its archives (``failed``: a failed deploy)."""
    system = get_system(session, ref, access)
    variables = plain_values(resolve_system(session, system))
    params = {k: v for k, v in {"project": project, "root": root}.items() if v is not None}
    try:
        raw = deploy.merged_config(variables, params)
    except deploy.ConfigError as exc:
        raise InvalidInput(exc.field, str(exc)) from None
    ctx = _ReadContext(runtime=request.app.state.engine.runtime, job_id=0, action="releases", step="releases",
                       attempt=1, system_id=system.id, params=params, context={},
                       deadline=time.monotonic() + LISTING_TIMEOUT_S)
    try:
        simulated = not ctx.driver(system).real_machines
    except DriverError as exc:
        raise Conflict(str(exc)) from None
    if simulated:
        return ReleasesOut(system_id=system.id, project=(raw or {}).get("project"), project_dir=None, current=None,
                           releases=[], archives=[], simulated=True)
    if raw is None:
        raise Conflict(f"{system.hostname} has no deploy configuration (variable {deploy.CONFIG_VARIABLE!r}); "
                       "give project and root")
    # Only where the project lives matters for a listing: check that much, not the whole configuration.
    try:
        config = deploy.parse_config({"project": raw.get("project"), "root": raw.get("root")})
    except deploy.ConfigError as exc:
        raise InvalidInput(exc.field, str(exc)) from None
    try:
        found = deploy.list_system_releases(ctx, ctx.system(), config)  # no variables needed for a listing
    except Failure as exc:  # a step's, a driver's or a transport's
        raise Conflict(f"cannot read the releases of {system.hostname}: {exc}") from None
    return ReleasesOut(
        system_id=system.id, project=config.project, project_dir=config.project_dir, current=found["current"],
        releases=[ReleaseOut(id=r, current=r == found["current"]) for r in found["releases"]],
        archives=[ArchiveOut(**a) for a in found["archives"]],
    )

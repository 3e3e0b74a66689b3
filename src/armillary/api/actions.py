"""POST /api/v1/systems/{ref}/actions: lifecycle actions on one system, answered 202 with the job."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from armillary.api.audit_trail import note
from armillary.api.deps import SessionDep
from armillary.api.job_start import IdempotencyKey, actor_kwargs, start_idempotent
from armillary.api.lookups import ACCESS_LOADING, check_hostname_free, get_system
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import InvalidInput
from armillary.domain.job_schemas import ActionRequest, JobOut
from armillary.domain.jobs import Job
from armillary.domain.models import System, SystemLabel
from armillary.domain.states import TransitionRefused, check_action
from armillary.engine.jobs import MACHINE_CREATING_ACTIONS, StateConflict, start_system_action
from armillary.network import machines as network
from armillary.workflows.deploy import ConfigError as DeployConfigError
from armillary.workflows.deploy import check_request as check_deploy_request

router = APIRouter(prefix="/systems", tags=["actions"])


def _clone(session: Session, source: System, hostname: str, owner_id: int) -> System:
    """A new system record copying the source's definition (not its machine)."""
    try:
        check_action("clone", source.state)
    except TransitionRefused as exc:
        raise StateConflict(str(exc), state=source.state) from None
    check_hostname_free(session, source.environment_id, hostname)
    clone = System(
        hostname=hostname, environment=source.environment, hypervisor=source.hypervisor, type=source.type,
        user=source.user, os=source.os, cpu=source.cpu, memory_mb=source.memory_mb, disk_gb=source.disk_gb,
        addresses=[], driver_props=dict(source.driver_props or {}), variables=dict(source.variables or {}),
        labels=[SystemLabel(key=label.key, value=label.value) for label in source.labels], owner_id=owner_id,
    )
    session.add(clone)
    session.flush()
    return clone


@router.post("/{ref}/actions", status_code=202, response_model=JobOut,
             responses={409: {"description": "locked, wrong state, or environment locked"}})
def run_action(
    ref: str,
    body: ActionRequest,
    request: Request,
    queue: bool = Query(False, description="Wait behind a job holding the system instead of answering 409"),
    session: Session = SessionDep,
    idempotency_key: str | None = IdempotencyKey,
    access: Access = requires(Permission.ENV_OWN),
) -> JSONResponse:
    """Start ``create``, ``provision``, ``deploy``, ``rollback``, ``destroy``, ``stage``, ``stop``, ``start``,
    ``reload`` or ``clone`` (which needs ``hostname``: the copy's). Follow the job at its Location.

    ``deploy`` and ``rollback`` are checked here (``armillary.workflows.deploy``): an invalid project
    configuration, or a cycle in its task graph, is a 422 naming it, and no job is made.

    Operators act on every system of their environments, users on the systems they own; a locked
    environment refuses everyone but admins (409); ``create``, ``stage`` and ``clone`` take from the
    owner's quota (403 naming the limit when it is spent)."""
    system = get_system(session, ref, access, ACCESS_LOADING)
    note(request, action=f"system.{body.action}")

    def start() -> Job:
        params = dict(body.params)
        target = system
        if body.action == "clone":
            if body.hostname is None:
                raise InvalidInput("hostname", "clone needs the new system's hostname")
            params.setdefault("provision", system.provisioned_at is not None)
            params["cloned_from"] = system.id
            target = _clone(session, system, body.hostname, access.principal.user_id)
        elif body.action == "reload":
            params.setdefault("provision", system.provisioned_at is not None)
        elif body.action in {"deploy", "rollback"}:
            # The project's configuration (a cyclic task graph included) is refused now, before anything runs.
            try:
                check_deploy_request(session, system, body.action, params)
            except DeployConfigError as exc:
                raise InvalidInput(exc.field, str(exc)) from None
        if body.action in MACHINE_CREATING_ACTIONS:
            network.check_create(session, target)  # 409 now when its addresses can't be had
        return start_system_action(
            session, target, body.action, params=params, queue=queue, idempotency_key=idempotency_key,
            request_id=request.state.request_id, **actor_kwargs(access),
        )

    system_id = None if body.action == "clone" else system.id
    return start_idempotent(request, session, idempotency_key, body.action, system_id, start)

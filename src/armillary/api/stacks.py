"""/api/v1/stacks: declarative templates of resources, planned then applied, checked for drift.

``POST /stacks`` defines a stack (nothing is made); ``POST /stacks/{ref}/plans`` stores a numbered plan
(no side effects); ``POST /stacks/{ref}/apply`` applies a plan (409 ``plan-stale`` when the stack changed
since) or plans and applies in one call; ``check``, ``converge`` and ``DELETE`` are jobs too, one at a
time per stack (409 ``stack-busy`` naming the running job); ``abandon`` forgets the stack and keeps what
it made. Operators of the stack's environment act, viewers read. Hidden parameters' values never come
back: they are shown as ``******`` wherever they would appear.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.api.deps import PageParams, SessionDep, get_by_ref, paginate, resolve_ref
from armillary.api.job_start import IdempotencyKey, start_idempotent
from armillary.api.lookups import get_environment_for
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.accounts import User
from armillary.domain.errors import Conflict, InvalidInput
from armillary.domain.models import Environment
from armillary.domain.schemas import MAX_ID, Page
from armillary.stacks import parameters, service
from armillary.stacks.models import Stack, StackEvent, StackPlan, StackResource
from armillary.stacks.schemas import (
    ApplyRequest,
    ConvergeRequest,
    EmptyRequest,
    EventOut,
    PlanOut,
    PlanRequest,
    ResourceOut,
    StackAdopt,
    StackCreate,
    StackOut,
    ValidateOut,
    ValidateRequest,
)

router = APIRouter(prefix="/stacks", tags=["stacks"])
BUSY = {409: {"description": "Another operation holds the stack (or the plan is stale)"}}
REDACTED = "******"


def actor_of(access: Access) -> service.Actor:
    return service.Actor(access.principal.user_id, access.principal.name, access.is_admin)


def box_of(request: Request) -> Any:
    return request.app.state.secret_box


def secrets_of(request: Request, stack: Stack) -> set[str]:
    return _secret_texts(box_of(request).decrypt(stack.secret_parameters))


def _secret_texts(hidden: dict[str, Any]) -> set[str]:
    return {str(v) for v in hidden.values() if v not in (None, "")}


def get_stack_for(session: Session, ref: str, access: Access) -> Stack:
    """The stack, checked for the route's permission; 404 alike for missing and hidden ones."""
    stack = get_by_ref(session, Stack, ref, "stack")
    access.check(stack.environment, hidden=f"no stack {ref!r}")
    return stack


def to_out(request: Request, session: Session, stack: Stack) -> StackOut:
    running = service.running_job(session, stack)
    owner = session.get(User, stack.owner_id) if stack.owner_id else None
    hidden = box_of(request).decrypt(stack.secret_parameters)  # once per stack: a listing shows many
    secrets = _secret_texts(hidden)
    count = len(service.records(session, stack))
    return StackOut(
        id=stack.id, name=stack.name, description=stack.description,
        environment={"id": stack.environment.id, "name": stack.environment.name}, status=stack.status,
        status_reason=stack.status_reason, serial=stack.serial, parallelism=stack.parallelism,
        parameters={**(stack.parameters or {}), **{k: REDACTED for k in hidden}},
        outputs=parameters.redact(stack.outputs or {}, secrets), drift=stack.drift or {}, resources=count,
        owner=owner.name if owner else None, last_job_id=stack.last_job_id,
        running_job_id=running.id if running else None, created_at=stack.created_at, updated_at=stack.updated_at)


def plan_out(stack: Stack, row: StackPlan) -> PlanOut:
    return PlanOut(number=row.number, serial=row.serial, stale=row.serial != stack.serial, summary=row.summary,
                   changes=row.changes, outputs=row.outputs, created_by=row.created_by, created_at=row.created_at,
                   applied_job_id=row.applied_job_id)


# ---------------------------------------------------------------- stacks


@router.post("/validate", response_model=ValidateOut)
def validate(body: ValidateRequest, access: Access = requires(Permission.AUTHENTICATED)) -> dict:
    """Check a template (and parameters): every problem with its path in the template. No side effects."""
    return service.validate(body.template, body.parameters)


@router.post("", status_code=201, response_model=StackOut, responses={409: {"description": "Name taken"}})
def create_stack(body: StackCreate, request: Request, response: Response, session: Session = SessionDep,
                 access: Access = requires(Permission.ENV_OPERATE)) -> StackOut:
    """Define a stack from a template and parameters (checked); nothing is made until an apply."""
    stack = _define(request, session, access, body)
    response.headers["Location"] = f"/api/v1/stacks/{stack.id}"
    return to_out(request, session, stack)


def _define(request: Request, session: Session, access: Access, body: StackCreate) -> Stack:
    env = resolve_ref(session, Environment, body.environment, "environment", "environment")
    access.check_ref(env, "environment", body.environment)
    if session.scalar(select(Stack.id).where(Stack.name == body.name)) is not None:
        raise Conflict(f"a stack named {body.name!r} already exists", errors=[{"field": "name", "message": "taken"}])
    tmpl = service.parse(body.template)
    service.bind(tmpl, body.parameters)
    stack = Stack(name=body.name, description=body.description, environment=env, template=service.raw_template(
        tmpl, body.template), parallelism=body.parallelism, status="new", status_reason="defined",
        outputs={}, drift={}, serial=1, owner_id=access.principal.user_id)
    service.store_parameters(stack, tmpl, body.parameters, box_of(request))
    session.add(stack)
    session.flush()
    return stack


@router.post("/adopt", status_code=202, responses={409: {"description": "Name taken"}})
def adopt(body: StackAdopt, request: Request, session: Session = SessionDep,
          access: Access = requires(Permission.ENV_OPERATE), idempotency_key: str | None = IdempotencyKey
          ) -> JSONResponse:
    """Define a stack whose resources (those named in ``resources``) already exist, and apply it: they are
    adopted, never made again (``abandon`` gives back what to adopt). Answers the apply's job."""
    tmpl = service.parse(body.template)
    raw = service.with_external_ids(service.raw_template(tmpl, body.template), body.resources)
    stack = _define(request, session, access, body.model_copy(update={"template": raw}))
    row = service.make_plan(session, stack, box_of(request), None, None, actor_of(access))
    return _start(request, session, stack, "apply", access, idempotency_key, row)


@router.get("", response_model=Page[StackOut])
def list_stacks(request: Request, response: Response, page: PageParams = Depends(),
                environment: str | None = Query(None, max_length=63, description="Environment id or name"),
                status: str | None = Query(None, max_length=15),
                session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)) -> dict:
    query = access.visible(select(Stack), Stack.environment_id)
    if environment is not None:
        query = query.where(Stack.environment_id == get_environment_for(session, environment, access).id)
    if status is not None:
        query = query.where(Stack.status == status)
    items, next_url = paginate(session, query, Stack, page, request, response)
    return {"items": [to_out(request, session, s) for s in items], "next": next_url}


@router.get("/{ref}", response_model=StackOut)
def read_stack(ref: str, request: Request, session: Session = SessionDep,
               access: Access = requires(Permission.ENV_READ)) -> StackOut:
    stack = get_stack_for(session, ref, access)
    service.settle_if_stale(session, stack)
    return to_out(request, session, stack)


# ---------------------------------------------------------------- plans


@router.post("/{ref}/plans", status_code=201, response_model=PlanOut)
def create_plan(ref: str, body: PlanRequest, request: Request, response: Response, session: Session = SessionDep,
                access: Access = requires(Permission.ENV_OPERATE)) -> PlanOut:
    """Store a numbered plan: per resource create / update (fields) / replace (the property and why) /
    delete / no-op, and the outputs. Nothing is touched."""
    stack = get_stack_for(session, ref, access)
    row = service.make_plan(session, stack, box_of(request), body.template, body.parameters, actor_of(access))
    response.headers["Location"] = f"/api/v1/stacks/{stack.id}/plans/{row.number}"
    return plan_out(stack, row)


@router.get("/{ref}/plans", response_model=list[PlanOut])
def list_plans(ref: str, limit: int = Query(20, ge=1, le=1000), session: Session = SessionDep,
               access: Access = requires(Permission.ENV_READ)) -> list[PlanOut]:
    """The stack's plans, newest first."""
    stack = get_stack_for(session, ref, access)
    rows = session.scalars(select(StackPlan).where(StackPlan.stack_id == stack.id)
                           .order_by(StackPlan.number.desc()).limit(limit))
    return [plan_out(stack, r) for r in rows]


@router.get("/{ref}/plans/{number}", response_model=PlanOut)
def read_plan(ref: str, number: int = Path(..., ge=1, le=MAX_ID), session: Session = SessionDep,
              access: Access = requires(Permission.ENV_READ)) -> PlanOut:
    stack = get_stack_for(session, ref, access)
    return plan_out(stack, service.get_plan(session, stack, number))


# ---------------------------------------------------------------- operations


def _start(request: Request, session: Session, stack: Stack, operation: str, access: Access, key: str | None,
           plan_row: StackPlan | None = None, rollback: bool = False) -> JSONResponse:
    return start_idempotent(request, session, key, f"stack-{operation}", None, lambda: service.start(
        session, stack, operation, actor_of(access), plan_row=plan_row, request_id=request.state.request_id,
        idempotency_key=key, rollback=rollback))


@router.post("/{ref}/apply", status_code=202, responses=BUSY)
def apply(ref: str, body: ApplyRequest, request: Request, session: Session = SessionDep,
          access: Access = requires(Permission.ENV_OPERATE), idempotency_key: str | None = IdempotencyKey
          ) -> JSONResponse:
    """Apply plan ``plan``, or plan (``template``/``parameters``, default the stack's) and apply at once.
    ``rollback: true``: on failure, back to the last template that applied successfully."""
    stack = get_stack_for(session, ref, access)
    if body.plan is not None:
        row = service.get_plan(session, stack, body.plan)
    else:
        service.check_free(session, stack, actor_of(access))
        row = service.make_plan(session, stack, box_of(request), body.template, body.parameters, actor_of(access))
    return _start(request, session, stack, "apply", access, idempotency_key, row, body.rollback)


@router.post("/{ref}/converge", status_code=202, responses=BUSY)
def converge(ref: str, request: Request, body: ConvergeRequest | None = None, session: Session = SessionDep,
             access: Access = requires(Permission.ENV_OPERATE), idempotency_key: str | None = IdempotencyKey
             ) -> JSONResponse:
    """Check every resource, then apply the stored template again: what drifted is repaired.
    ``rollback: true``: on failure, back to the last template that applied successfully."""
    return _start(request, session, get_stack_for(session, ref, access), "converge", access, idempotency_key,
                  rollback=body is not None and body.rollback)


@router.post("/{ref}/check", status_code=202, responses=BUSY)
def check(ref: str, request: Request, body: EmptyRequest | None = None, session: Session = SessionDep,
          access: Access = requires(Permission.ENV_OPERATE), idempotency_key: str | None = IdempotencyKey
          ) -> JSONResponse:
    """Read every resource's actual state; drift (missing, stopped, properties differing) is recorded."""
    return _start(request, session, get_stack_for(session, ref, access), "check", access, idempotency_key)


@router.delete("/{ref}", status_code=202, responses=BUSY)
def delete_stack(ref: str, request: Request, session: Session = SessionDep,
                 access: Access = requires(Permission.ENV_OPERATE), idempotency_key: str | None = IdempotencyKey
                 ) -> JSONResponse:
    """Delete every resource in reverse dependency order (``retain`` ones are forgotten), then the stack."""
    return _start(request, session, get_stack_for(session, ref, access), "delete", access, idempotency_key)


@router.post("/{ref}/abandon", responses=BUSY)
def abandon(ref: str, request: Request, body: EmptyRequest | None = None, session: Session = SessionDep,
            access: Access = requires(Permission.ENV_OPERATE)) -> dict:
    """Forget the stack; everything it made stays. Answers the stack's state (as ``export``)."""
    return service.abandon(session, get_stack_for(session, ref, access), actor_of(access))


# ---------------------------------------------------------------- reading


@router.get("/{ref}/outputs")
def outputs(ref: str, request: Request, session: Session = SessionDep,
            access: Access = requires(Permission.ENV_READ)) -> dict:
    stack = get_stack_for(session, ref, access)
    return parameters.redact(stack.outputs or {}, secrets_of(request, stack))


@router.get("/{ref}/resources", response_model=list[ResourceOut])
def list_resources(ref: str, request: Request, session: Session = SessionDep,
                   access: Access = requires(Permission.ENV_READ)) -> list[ResourceOut]:
    stack = get_stack_for(session, ref, access)
    secrets = secrets_of(request, stack)
    rows = session.scalars(select(StackResource).where(StackResource.stack_id == stack.id)
                           .order_by(StackResource.id))
    return [ResourceOut(name=r.name, type=r.type, physical_id=r.physical_id, status=r.status,
                        status_reason=r.status_reason, properties=parameters.redact(r.properties or {}, secrets),
                        attributes=parameters.redact(r.attributes or {}, secrets), drift=r.drift or {},
                        depends_on=r.depends_on or [], deletion_policy=r.deletion_policy, job_id=r.job_id,
                        updated_at=r.updated_at) for r in rows]


@router.get("/{ref}/events", response_model=list[EventOut])
def list_events(ref: str, after: int = Query(0, ge=0, le=MAX_ID, description="Events after this id (oldest first)"),
                before: int | None = Query(None, ge=1, le=MAX_ID, description=(
                    "Events before this id, newest first; the latest events: a number above the last id, e.g. "
                    f"{MAX_ID}. Not with `after`.")),
                limit: int = Query(100, ge=1, le=1000), session: Session = SessionDep,
                access: Access = requires(Permission.ENV_READ)) -> list[StackEvent]:
    if before is not None and after:
        raise InvalidInput("before", "pages newest first; `after` pages oldest first: give one of them")
    stack = get_stack_for(session, ref, access)
    query = select(StackEvent).where(StackEvent.stack_id == stack.id)
    if before is not None:
        query = query.where(StackEvent.id < before).order_by(StackEvent.id.desc())
    else:
        query = query.where(StackEvent.id > after).order_by(StackEvent.id)
    return list(session.scalars(query.limit(limit)))


@router.get("/{ref}/export")
def export(ref: str, session: Session = SessionDep, access: Access = requires(Permission.ENV_READ)) -> dict:
    """The stack's template, its non-secret parameters and what it holds."""
    return service.export(session, get_stack_for(session, ref, access))

"""What the API and the CLI call: validate, plan, start apply / converge / check / delete, abandon, adopt,
export, outputs. Everything a request decides is written in its own transaction before anything is
touched; mutating operations are one job (workflow ``stack-apply`` or ``stack-check``,
``armillary.workflows.stacks``) holding the lock ``stack:<id>``: a second operation meets it and gets a
409 naming the running job, never a queue (as clusters do).

Parameters: the non-hidden values are stored as given; the hidden ones (``hidden: true``, secrets) are a
Fernet token made with the server's secret box, like hypervisors' secrets, and never returned.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from armillary import redaction
from armillary.clusters.operations import Actor  # whom an operation acts for, as for clusters
from armillary.domain.errors import Conflict, EnvironmentLocked, InvalidInput
from armillary.domain.jobs import Job
from armillary.domain.models import SystemLabel
from armillary.domain.secrets import SecretBox
from armillary.engine.jobs import create_job
from armillary.engine.leases import lock_holder, try_lock
from armillary.stacks import parameters, plan, template
from armillary.stacks.models import Stack, StackEvent, StackPlan, StackResource, StackStatus

APPLY_WORKFLOW = "stack-apply"
CHECK_WORKFLOW = "stack-check"
LOCK_LEASE_S = 60.0
OPERATIONS = ("apply", "converge", "delete", "check")


class StackBusy(Conflict):
    slug, title = "stack-busy", "Stack is busy"


class PlanStale(Conflict):
    slug, title = "plan-stale", "Plan is stale"


class InvalidTemplate(InvalidInput):
    """A template (or its parameters) with problems: every one with its path in the template."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        first = problems[0] if problems else {"path": "template", "message": "invalid"}
        super().__init__(first["path"], first["message"])
        self.detail = "; ".join(f"{p['path']}: {p['message']}" for p in problems[:20])
        self.errors = [{"field": p["path"], "message": p["message"]} for p in problems]



def lock_name(stack_id: int) -> str:
    return f"stack:{stack_id}"


def running_job(session: Session, stack: Stack) -> Job | None:
    return lock_holder(session, lock_name(stack.id))


# ---------------------------------------------------------------- templates and parameters


def parse(source: str | Mapping[str, Any]) -> template.Template:
    try:
        return plan.parse(source)
    except template.TemplateError as exc:
        raise InvalidTemplate([{"path": p.path or "template", "message": p.message} for p in exc.problems]) from None


def bind(tmpl: template.Template, values: Mapping[str, Any], stack: Stack | None = None) -> dict[str, Any]:
    """The parameters' values (defaults applied, checked), with the pseudo parameters of ``stack``."""
    pseudo = {"stack_name": stack.name, "stack_id": str(stack.id)} if stack is not None and stack.id else {}
    try:
        return parameters.bind_parameters(tmpl, dict(values), **pseudo)
    except template.TemplateError as exc:
        raise InvalidTemplate([{"path": p.path or "parameters", "message": p.message} for p in exc.problems]) from None


def split_secrets(tmpl: template.Template, values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    hidden = parameters.hidden_parameters(tmpl)
    return ({k: v for k, v in values.items() if k not in hidden}, {k: v for k, v in values.items() if k in hidden})


def store_parameters(row: Stack | StackPlan, tmpl: template.Template, values: Mapping[str, Any],
                     box: SecretBox) -> None:
    plain, secret = split_secrets(tmpl, values)
    redaction.register(*(v for v in secret.values() if isinstance(v, str | int | float)))
    row.parameters = plain
    row.secret_parameters = box.encrypt(secret) if secret else None


def stored_parameters(row: Stack | StackPlan, box: SecretBox) -> dict[str, Any]:
    """The parameters' values, hidden ones decrypted and registered as secrets of this process (masked
    in logs and job output from now on, whichever process decrypts them)."""
    secret = box.decrypt(row.secret_parameters)
    redaction.register(*(v for v in secret.values() if isinstance(v, str | int | float)))
    return {**(row.parameters or {}), **secret}


def validate(source: str | Mapping[str, Any], values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Check a template (and parameters, when given), no side effects: ``valid`` false with every problem
    (path, message), or its shape. A verdict, not a refusal: the request itself was fine."""
    try:
        tmpl = parse(source)
        if values is not None:
            bind(tmpl, values)
    except InvalidTemplate as exc:
        return {"valid": False, "problems": [{"path": e["field"], "message": e["message"]} for e in exc.errors or []],
                "parameters": [], "hidden_parameters": [], "resources": {}, "outputs": []}
    return {"valid": True, "problems": [], "description": tmpl.description, "parameters": sorted(tmpl.parameters),
            "hidden_parameters": sorted(parameters.hidden_parameters(tmpl)),
            "resources": {n: r.type for n, r in tmpl.resources.items()}, "outputs": sorted(tmpl.outputs)}


# ---------------------------------------------------------------- plans


def records(session: Session, stack: Stack) -> dict[str, StackResource]:
    return {r.name: r for r in session.scalars(select(StackResource).where(StackResource.stack_id == stack.id))}


def make_plan(session: Session, stack: Stack, box: SecretBox, source: Mapping[str, Any] | str | None,
              values: Mapping[str, Any] | None, actor: Actor) -> StackPlan:
    """A stored, numbered plan of ``source`` (default: the stack's template) with ``values`` (default: the
    stack's parameters, the hidden ones kept when not given again)."""
    raw = source if source is not None else stack.template
    tmpl = parse(raw)
    merged = {**stored_parameters(stack, box), **(values or {})}
    bound = bind(tmpl, merged, stack)
    existing = records(session, stack)
    if existing:
        check_immutable(tmpl, bound, stack, box)
    try:
        result = plan.compute(tmpl, bound, existing)
    except template.TemplateError as exc:
        raise InvalidTemplate([{"path": p.path or "template", "message": p.message} for p in exc.problems]) from None
    if result.problems:
        raise InvalidTemplate(result.problems)
    number = (session.scalar(select(func.max(StackPlan.number)).where(StackPlan.stack_id == stack.id)) or 0) + 1
    row = StackPlan(stack_id=stack.id, number=number, serial=stack.serial, template=raw_template(tmpl, raw),
                    changes=[c.as_dict() for c in result.changes], outputs=result.outputs,
                    summary=result.summary, created_by=actor.name)
    store_parameters(row, tmpl, {k: v for k, v in merged.items() if k in tmpl.parameters}, box)
    session.add(row)
    session.flush()
    return row


def check_immutable(tmpl: template.Template, bound: Mapping[str, Any], stack: Stack, box: SecretBox) -> None:
    """Heat's ``immutable: true``: once the stack has resources, the parameter keeps the value it was
    applied with (a hidden one's values are never shown)."""
    immutable = [name for name, p in tmpl.parameters.items() if p.immutable]
    if not immutable or stack.template is None:
        return
    try:
        before = bind(parse(stack.template), stored_parameters(stack, box), stack)
    except InvalidTemplate:  # the stored one no longer binds (nothing applied yet): nothing to keep
        return
    hidden = parameters.hidden_parameters(tmpl)
    problems = [{"path": f"parameters.{name}",
                 "message": "is immutable: it cannot change once the stack has resources"
                            + ("" if name in hidden else f" (it is {before[name]!r}, not {bound[name]!r})")}
                for name in immutable if name in before and before[name] != bound.get(name)]
    if problems:
        raise InvalidTemplate(problems)


def raw_template(tmpl: template.Template, source: Mapping[str, Any] | str) -> dict[str, Any]:
    raw = getattr(tmpl, "raw", None)
    return dict(raw) if isinstance(raw, Mapping) else dict(source) if isinstance(source, Mapping) else {}


def get_plan(session: Session, stack: Stack, number: int) -> StackPlan:
    from armillary.domain.errors import NotFound

    row = session.scalar(select(StackPlan).where(StackPlan.stack_id == stack.id, StackPlan.number == number))
    if row is None:
        raise NotFound(f"stack {stack.name!r} has no plan {number}")
    return row


# ---------------------------------------------------------------- operations


BUSY_STATUSES = (StackStatus.APPLYING, StackStatus.DELETING, StackStatus.CHECKING, StackStatus.ROLLING_BACK)


def settle_if_stale(session: Session, stack: Stack) -> None:
    """A stack left "applying" by an operation that ended without settling (its worker died and the reaper
    failed the job) says so: failed, its resources as recorded. Never wedged."""
    if stack.status in BUSY_STATUSES and running_job(session, stack) is None:
        stack.status = StackStatus.FAILED
        stack.status_reason = f"the last operation (job {stack.last_job_id}) ended without settling; " \
                              "the resources say what exists: apply or converge again"


def check_free(session: Session, stack: Stack, actor: Actor) -> None:
    holder = running_job(session, stack)
    if holder is not None:
        raise StackBusy(f"stack {stack.name!r} is busy with job {holder.id} ({holder.action}, {holder.status}); "
                        "one operation at a time: retry when it ends", holder_job_id=holder.id)
    if stack.environment.locked and not actor.admin:
        raise EnvironmentLocked(stack.environment)
    settle_if_stale(session, stack)


def start(session: Session, stack: Stack, operation: str, actor: Actor, *, plan_row: StackPlan | None = None,
          request_id: str | None = None, idempotency_key: str | None = None, rollback: bool = False) -> Job:
    """Start ``operation`` (apply of ``plan_row``, converge, delete, check) on ``stack``: the job, not committed.
    An apply of a plan made before the stack last changed is refused (409 ``plan-stale``). ``rollback``
    (apply and converge): on failure, go back to the last template that applied successfully (see
    ``armillary.workflows.stacks``)."""
    if rollback and operation not in ("apply", "converge"):
        raise InvalidInput("rollback", f"rollback is for apply and converge, not {operation}")
    check_free(session, stack, actor)
    if plan_row is not None:
        if plan_row.serial != stack.serial:
            raise PlanStale(f"plan {plan_row.number} was made from version {plan_row.serial} of stack "
                            f"{stack.name!r}, which is now at version {stack.serial}: make a new plan",
                            plan_serial=plan_row.serial, stack_serial=stack.serial)
        stack.template = plan_row.template
        stack.parameters, stack.secret_parameters = plan_row.parameters, plan_row.secret_parameters
        stack.serial += 1
    workflow = CHECK_WORKFLOW if operation == "check" else APPLY_WORKFLOW
    job = create_job(session, action=f"stack-{operation}", workflow=workflow,
                     params={"stack_id": stack.id, "stack": stack.name, "operation": operation,
                             "plan": plan_row.number if plan_row is not None else None, "rollback": rollback,
                             "parallelism": stack.parallelism, "actor": actor.as_dict()},
                     context={"stack": stack.name}, idempotency_key=idempotency_key, request_id=request_id,
                     user_id=actor.user_id, actor=actor.name)
    job.lock_resource = lock_name(stack.id)
    holder = try_lock(session, job.lock_resource, job, LOCK_LEASE_S)
    if holder is not None:
        raise StackBusy(f"stack {stack.name!r} is busy with job {holder.id} ({holder.action}); "
                        "one operation at a time: retry when it ends", holder_job_id=holder.id)
    if plan_row is not None:
        plan_row.applied_job_id = job.id
    stack.last_job_id = job.id
    stack.status = {"delete": StackStatus.DELETING, "check": StackStatus.CHECKING}.get(operation,
                                                                                     StackStatus.APPLYING)
    stack.status_reason = f"{operation} under way (job {job.id})"
    event(session, stack.id, job.id, None, operation, "started", f"{operation} started by {actor.name}")
    session.flush()
    return job


def event(session: Session, stack_id: int, job_id: int | None, resource: str | None, action: str, status: str,
          message: str = "") -> None:
    session.add(StackEvent(stack_id=stack_id, job_id=job_id, resource=resource, action=action, status=status,
                           message=message[:2000]))


def with_external_ids(raw: Mapping[str, Any], adopted: Mapping[str, str]) -> dict[str, Any]:
    """The template with ``external_id`` set on the resources to adopt (unknown names: every one refused)."""
    resources = dict(raw.get("resources") or {})
    unknown = sorted(set(adopted) - set(resources))
    if unknown:
        raise InvalidTemplate([{"path": f"resources.{n}", "message": "the template has no such resource to adopt"}
                               for n in unknown])
    for name, external_id in adopted.items():
        resources[name] = {**resources[name], "external_id": external_id}
    return {**raw, "resources": resources}


# ---------------------------------------------------------------- reading, abandoning


def export(session: Session, stack: Stack) -> dict[str, Any]:
    """What the stack is: its template, its non-secret parameters, and what it holds (no secret values)."""
    return {"name": stack.name, "environment": stack.environment.name, "template": stack.template,
            "parameters": stack.parameters or {}, "status": stack.status,
            "resources": [{"name": r.name, "type": r.type, "physical_id": r.physical_id, "status": r.status}
                          for r in sorted(records(session, stack).values(), key=lambda r: r.id)]}


def abandon(session: Session, stack: Stack, actor: Actor) -> dict[str, Any]:
    """Forget the stack, keep everything it made: its state, returned (systems lose their stack label)."""
    check_free(session, stack, actor)
    state = export(session, stack)
    from armillary.stacks.resources.system import STACK_LABEL

    for record in records(session, stack).values():
        if record.type == "Armillary::System" and record.physical_id:
            session.query(SystemLabel).filter(SystemLabel.system_id == int(record.physical_id),
                                              SystemLabel.key == STACK_LABEL).delete()
    session.delete(stack)
    session.flush()
    return state


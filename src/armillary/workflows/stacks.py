"""The stack workflows: ``stack-apply`` (apply, converge, delete), ``stack-check`` and the one-step
``stack-resource`` child of quick resources. What a plan decided is decided again, resource by resource,
from the records when its layer starts (``armillary.stacks.plan.decide``), so a retried or resumed apply
continues from what is recorded and never makes twice what exists.

``stack-apply``: ``observe`` (converge only: every resource's actual state, as ``check``) → ``resources``
(the template's dependency layers in order; in a layer, up to ``parallelism`` resources at once, each
action a child job: the lifecycle job for a system, the cluster operation for a cluster, a
``stack-resource`` job otherwise; a running child an earlier attempt started is adopted, not started
again; then what the template no longer has is deleted, dependents first) → ``settle`` (outputs, status;
the job fails naming the failed resources). On the first failure no new resource starts; the running
ones finish and are recorded, so the stack says exactly what exists. ``delete`` tears everything down
in reverse dependency order and then forgets the stack.

``rollback`` (between ``resources`` and ``settle``; a no-op unless the operation failed and was started
with ``rollback: true``): the stack's template and parameters go back to the last ones that applied
successfully, the old objects this apply replaced create-before-delete become the resources again, and
the same walk makes the stack hold that template; when nothing ever applied successfully, everything
the stack holds is deleted instead (as Heat rolls back a failed create). The stack ends ``rolled_back``
or ``rollback_failed``; the job fails either way (what was asked did not happen). A resumed rollback
decides again from the records, as an apply does.

create_before_delete replacements (``update_policy: {replace: create_before_delete}``): the old object is
set apart as a deposed record (``armillary.stacks.plan``) in the transaction that starts the new one's
create; dependents in later layers read the new one; the deposed records are deleted with what the
template no longer has, at the end.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from armillary.domain.errors import Conflict, Forbidden
from armillary.domain.jobs import TERMINAL_JOB, Job, JobStatus
from armillary.engine.context import StepContext
from armillary.engine.events import insert_event
from armillary.engine.workflows import StepSpec, Workflow
from armillary.failures import PermanentFailure, TransientFailure
from armillary.stacks import functions, graph, plan, service
from armillary.stacks.models import ResourceStatus, Stack, StackResource, StackStatus
from armillary.stacks.resources.base import QUICK_WORKFLOW, Act, get_type

POLL_S = 0.02


def _stack(session: Any, ctx: StepContext) -> Stack:
    stack = session.get(Stack, ctx.params["stack_id"])
    if stack is None:
        raise PermanentFailure(f"stack {ctx.params['stack']!r} no longer exists")
    return stack


def _state(ctx: StepContext) -> tuple[Any, dict[str, Any]]:
    """The stored template (parsed) and its bound parameters, hidden ones decrypted."""
    with ctx.runtime.db.session() as session:
        stack = _stack(session, ctx)
        tmpl = plan.parse(stack.template)
        params = service.bind(tmpl, service.stored_parameters(stack, ctx.runtime.secret_box), stack)
    return tmpl, params


# ---------------------------------------------------------------- observe (check, converge)


def run_observe(ctx: StepContext) -> dict[str, Any]:
    if ctx.params.get("operation") not in ("check", "converge"):
        return {}
    drifted: dict[str, Any] = {}
    lines: list[str] = []
    with ctx.runtime.db.session() as session:
        stack = _stack(session, ctx)
        for record in service.records(session, stack).values():
            if record.status != ResourceStatus.COMPLETE or not record.physical_id:
                continue
            found = get_type(record.type).observe(ctx, session, record)
            record.drift = found.as_dict()
            if found.drifted:
                drifted[record.name] = record.drift
                lines.append(f"✗ {record.name}: drift: {found.detail or found.state}"
                             + (f" ({', '.join(sorted(found.differing))} differ)" if found.differing else ""))
        stack.drift = drifted
        session.commit()
    for line in lines:  # after the commit (see _Deferred)
        ctx.log(line, level="warning")
    ctx.log(f"check: {len(drifted)} resources drifted")
    return {"drift": drifted}


# ---------------------------------------------------------------- resources


Item = tuple[str, plan.Change, Any, dict[str, Any]]  # (name, change, template resource or None, properties)


class _Walk:
    """One pass over a set of resources: start their actions (at most ``parallelism`` at once), follow the
    children, record what they did. ``failed`` stops new starts. Starts and finishes are written in batches,
    one transaction each (a commit per resource was the bottleneck at 1,000 resources); a batch with a
    refusal in it is rolled back and started one by one, so each refusal is recorded alone."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.parallelism = max(1, int(ctx.params.get("parallelism") or 10))
        self.actor = ctx.params.get("actor") or {}
        self.running: dict[int, str] = {}  # child job id → resource name
        self.results: dict[str, dict[str, Any]] = {}
        self.failed = False

    def check_stop(self) -> None:
        if self.ctx.runtime.stopping.is_set():
            raise TransientFailure("this server is stopping; the stack operation resumes on the next attempt")
        if not self.failed and self.ctx.cancel_requested():
            self.failed = True
            self.ctx.log("cancel requested: no new resource starts", level="warning")

    def run(self, items: list[Item]) -> None:
        pending = list(items)
        while pending or self.running:
            self.check_stop()
            if self.failed:
                pending.clear()
            free = self.parallelism - len(self.running)
            if pending and free > 0:
                batch, pending = pending[:free], pending[free:]
                self.start(batch)
                self.ctx.runtime.wake()
            if self.running:
                self.ctx.sleep(POLL_S)
                self.collect()

    def collect(self) -> None:
        with self.ctx.runtime.db.session() as session:
            rows = session.execute(select(Job.id, Job.status, Job.error)
                                   .where(Job.id.in_(list(self.running)))).all()
        ended = [(self.running.pop(job_id), job_id, status == JobStatus.SUCCEEDED.value, error)
                 for job_id, status, error in rows if status in TERMINAL_JOB]
        if ended:
            self.finish(ended)

    def _records(self, session: Any, stack: Stack, names: list[str]) -> dict[str, StackResource]:
        return {r.name: r for r in session.scalars(select(StackResource).where(
            StackResource.stack_id == stack.id, StackResource.name.in_(names)))}

    def finish(self, ended: list[tuple[str, int | None, bool, str | None]]) -> None:
        """Record what ended children did, in one transaction; then their log lines."""
        lines: list[tuple[str, str]] = []
        with self.ctx.runtime.db.session() as session:
            stack = _stack(session, self.ctx)
            records = self._records(session, stack, [name for name, _, _, _ in ended])
            for name, job_id, succeeded, error in ended:
                record = records.get(name)
                if record is None:
                    continue
                action = record.action or "update"
                kind = get_type(record.type)
                kind.finish(session, Act(stack, record, action, dict(record.pending or {}), self.ctx.job_id,
                                         self.actor), succeeded)
                if succeeded and action in ("delete", "forget"):
                    session.delete(record)
                else:
                    if succeeded:
                        record.properties, record.status, record.status_reason = dict(record.pending or {}), \
                            ResourceStatus.COMPLETE, ""
                        record.attributes = kind.attributes(session, record)
                        record.drift = {}
                    else:
                        record.status, record.status_reason = ResourceStatus.FAILED, (error or "failed")[:1000]
                    record.job_id, record.action = None, (None if succeeded else action)
                service.event(session, stack.id, job_id, name, action, "succeeded" if succeeded else "failed",
                              error or "")
                self.results[name] = {"action": action, "status": "succeeded" if succeeded else "failed",
                                      **({"job_id": job_id} if job_id else {}), **({"error": error} if error else {})}
                lines.append((f"{'✔' if succeeded else '✗'} {name}: {action}" + (f" ({error})" if error else ""),
                              "info" if succeeded else "error"))
                if not succeeded:
                    self.failed = True
            session.commit()
        self._log(lines)

    def _log(self, lines: list[tuple[str, str]]) -> None:
        if lines:
            with self.ctx.runtime.db.engine.begin() as conn:
                for message, level in lines:
                    insert_event(conn, self.ctx.job_id, "log", message, step=self.ctx.step, level=level)

    def start(self, batch: list[Item]) -> None:
        """Record the actions and start their children, the batch in one transaction (one by one when any
        is refused); what needs no child is finished at once."""
        if len(batch) > 1:
            try:
                self._start(batch)
                return
            except (PermanentFailure, Conflict, Forbidden):
                pass  # rolled back: each alone, so the refusal is recorded on its resource
        for item in batch:
            try:
                self._start([item])
            except (PermanentFailure, Conflict, Forbidden) as exc:
                self._refused(item[0], item[1].action, getattr(exc, "detail", None) or str(exc))

    def _start(self, batch: list[Item]) -> None:
        done: list[tuple[str, int | None, bool, str | None]] = []
        started: dict[int, str] = {}
        with self.ctx.runtime.db.session() as session:
            stack = _stack(session, self.ctx)
            records = self._records(session, stack, [name for name, _, _, _ in batch])
            try:
                for name, change, resource, props in batch:
                    job = self._start_one(session, stack, records.get(name), name, change, resource, props)
                    if job is None:
                        done.append((name, None, True, None))
                    else:
                        started[job.id] = name
            except BaseException:
                session.rollback()
                raise
            session.commit()
        self.running.update(started)
        if done:
            self.finish(done)

    def _start_one(self, session: Any, stack: Stack, record: StackResource | None, name: str,
                   change: plan.Change, resource: Any, props: dict[str, Any]) -> Job | None:
        action = change.action
        if action == "replace" and change.replace_policy == plan.CREATE_BEFORE_DELETE and record is not None \
                and record.physical_id is not None:
            self._depose(session, stack, record)
            action = "create"  # a resumed one continues as the create it is
        if record is None:
            record = StackResource(stack_id=stack.id, name=name, type=change.type, properties={}, attributes={},
                                   drift={}, pending={}, depends_on=[], deletion_policy="delete")
            session.add(record)
            session.flush()
        if resource is not None:
            record.depends_on = sorted(resource.depends_on)
            record.deletion_policy = resource.deletion_policy
        record.type, record.pending, record.action = change.type, props, action
        record.status = ResourceStatus.DELETING if action == "delete" else ResourceStatus.PENDING
        kind = get_type(change.type)
        act = Act(stack, record, action, props, self.ctx.job_id, self.actor, self.ctx.runtime.secret_box)
        job = None
        if action == "adopt":
            kind.adopt(session, act, str(resource.external_id))
        elif action != "forget":
            job = kind.start(session, act)
        if job is not None:
            session.flush()
            record.job_id = job.id
        message = change.reason or (", ".join(change.fields) if change.fields else "")
        if action != change.action:
            message = f"{change.property}: {message}; create before delete: the old one is deleted at the end"
        service.event(session, stack.id, job.id if job else None, name, change.action, "started", message)
        return job

    def _depose(self, session: Any, stack: Stack, record: StackResource) -> None:
        """Set the old object apart (its own record, deleted at the end of the apply) and leave the
        resource's record empty for the new one, in the transaction that starts the new one."""
        session.add(StackResource(
            stack_id=stack.id, name=plan.deposed_name(record.name, self.ctx.job_id), type=record.type,
            physical_id=record.physical_id, status=ResourceStatus.COMPLETE, status_reason="",
            properties=dict(record.properties or {}), pending={}, attributes=dict(record.attributes or {}),
            depends_on=list(record.depends_on or []), deletion_policy=record.deletion_policy, drift={}))
        record.physical_id, record.properties, record.attributes, record.drift = None, {}, {}, {}
        session.flush()

    def _refused(self, name: str, action: str, why: str) -> None:
        with self.ctx.runtime.db.session() as session:
            stack = _stack(session, self.ctx)
            record = session.scalar(select(StackResource).where(StackResource.stack_id == stack.id,
                                                                StackResource.name == name))
            if record is not None:
                record.status, record.status_reason = ResourceStatus.FAILED, why[:1000]
            service.event(session, stack.id, None, name, action, "failed", why)
            session.commit()
        self.results[name] = {"action": action, "status": "failed", "error": why}
        self.ctx.log(f"✗ {name}: {action} not started: {why}", level="error")
        self.failed = True

    def adopt_running(self, names: list[str]) -> list[str]:
        """Children an earlier attempt of this step started are followed, not started again (those that
        ended meanwhile are recorded at once); returns the names left to decide."""
        with self.ctx.runtime.db.session() as session:
            rows = session.execute(select(StackResource.name, StackResource.job_id)
                                   .where(StackResource.stack_id == self.ctx.params["stack_id"],
                                          StackResource.name.in_(names), StackResource.job_id.is_not(None))).all()
        for name, job_id in rows:
            self.running[job_id] = name
        if rows:
            self.collect()
        taken = {name for name, _ in rows}
        return [n for n in names if n not in taken]


def run_resources(ctx: StepContext) -> dict[str, Any]:
    walk = _Walk(ctx)
    _converge(ctx, walk, to_template=ctx.params.get("operation") != "delete")
    failed = sorted(n for n, r in walk.results.items() if r["status"] != "succeeded")
    ctx.log(f"resources: {len(walk.results) - len(failed)} ✔, {len(failed)} ✗")
    return {"resources": walk.results, "failed": failed}


def _converge(ctx: StepContext, walk: _Walk, *, to_template: bool, forget: frozenset[str] = frozenset()) -> None:
    """Make the stack hold what its stored template says (``to_template``) or nothing: the template's
    layers in order, then what it no longer has (deposed objects included) torn down, dependents first.
    ``forget``: names to forget rather than delete when torn down (things a rolled back apply adopted)."""
    keep: set[str] = set()
    if to_template:
        tmpl, params = _state(ctx)
        conditions = functions.evaluate_conditions(tmpl, params)
        active = graph.active_resources(tmpl, conditions)
        for index, layer in enumerate(graph.layers(tmpl, conditions)):
            if walk.failed:
                break
            _layer(ctx, walk, tmpl, params, conditions, active, layer, index)
        keep = set(active)
    if walk.failed:
        return
    with ctx.runtime.db.session() as session:
        recs = service.records(session, _stack(session, ctx))
        for r in recs.values():
            session.expunge(r)
    for change_layer in plan.reverse_layers({n: r for n, r in recs.items() if n not in keep},
                                            lambda r: r.depends_on or []):
        if walk.failed:
            break
        left = walk.adopt_running(change_layer)
        walk.run([(c.resource, c, None, dict(recs[c.resource].properties or recs[c.resource].pending or {}))
                  for c in _teardown({n: recs[n] for n in left}, recs, keep, forget)])


def _teardown(gone: dict[str, StackResource], recs: dict[str, StackResource], keep: set[str],
              forget: frozenset[str]) -> list[plan.Change]:
    """The deletions of ``gone``; a deposed record whose object a kept resource holds again (the same
    physical id: a DNS record rewritten in place) is forgotten, never deleted from under it."""
    held = {(r.type, r.physical_id) for n, r in recs.items() if n in keep and r.physical_id is not None}
    changes = plan.deletions(gone, set())
    for change in changes:
        record = gone[change.resource]
        if plan.is_deposed(change.resource) and (record.type, record.physical_id) in held:
            change.action, change.reason = "forget", "its replacement is the same object"
        elif change.resource in forget:
            change.action, change.reason = "forget", "adopted by the rolled back apply: left as it was"
    return changes


def _layer(ctx: StepContext, walk: _Walk, tmpl: Any, params: dict[str, Any], conditions: dict[str, bool],
           active: dict[str, Any], layer: list[str], index: int) -> None:
    names = walk.adopt_running(list(layer))
    with ctx.runtime.db.session() as session:
        recs = service.records(session, _stack(session, ctx))
        for r in recs.values():
            session.expunge(r)
    fn_ctx = plan.context(params, conditions, recs, set())
    items: list[Item] = []
    for name in names:
        resource = active[name]
        props = functions.resolve(resource.properties or {}, fn_ctx)
        if plan.has_unknown(props):
            walk._refused(name, "create", "a property reads a resource that does not exist")
            return
        change = plan.decide(resource, props, recs.get(name), index)
        why_not = plan.create_before_delete_problem(resource, props, recs.get(name), change)
        if why_not is not None:
            walk._refused(name, "replace", f"create_before_delete cannot be done: {why_not}")
            return
        if change.action != "no-op":
            items.append((name, change, resource, props))
    walk.run(items)


# ---------------------------------------------------------------- rollback


def run_rollback(ctx: StepContext) -> dict[str, Any]:
    """After a failed apply/converge started with ``rollback: true``: back to the last good template (or
    to nothing). The switch is written once (the stack says ``rolling_back``); a resumed step walks
    again from the records."""
    if not ctx.context.get("failed") or not ctx.params.get("rollback") \
            or ctx.params.get("operation") not in ("apply", "converge"):
        return {}
    with ctx.runtime.db.session() as session:
        stack = _stack(session, ctx)
        target = "template" if stack.last_good_template is not None else "nothing"
        if stack.status != StackStatus.ROLLING_BACK:
            _switch_back(session, stack, ctx.job_id)
            session.commit()
        forget = _adopted(session, stack, ctx.params.get("plan"))
    ctx.log(f"rollback: to {'the last template that applied successfully' if target == 'template' else 'nothing'}",
            level="warning")
    walk = _Walk(ctx)
    _converge(ctx, walk, to_template=target == "template", forget=forget)
    failed = sorted(n for n, r in walk.results.items() if r["status"] != "succeeded")
    ctx.log(f"rollback: {len(walk.results) - len(failed)} ✔, {len(failed)} ✗")
    return {"rollback": {"to": target, "resources": walk.results, "failed": failed,
                         "complete": not walk.failed}}


def _switch_back(session: Any, stack: Stack, job_id: int) -> None:
    """The stack's template and parameters become the last good ones; the old objects this job replaced
    create-before-delete become the resources again (the new ones set apart in their place, deleted by
    the walk): a rollback gives back the very objects, not copies. No last good template: the template
    stays, the walk deletes everything."""
    if stack.last_good_template is not None:
        keep = set((stack.last_good_template or {}).get("resources") or {})
        recs = service.records(session, stack)
        for name, record in recs.items():
            base, _, suffix = name.rpartition(plan.DEPOSED)
            if suffix != str(job_id) or base not in keep:
                continue
            live = recs.get(base)
            if live is not None:
                live.name = plan.deposed_name(base, job_id, undone=True)
                session.flush()
            record.name = base
            session.flush()
        stack.template = stack.last_good_template
        stack.parameters = stack.last_good_parameters or {}
        stack.secret_parameters = stack.last_good_secret_parameters
        stack.serial += 1
    stack.status = StackStatus.ROLLING_BACK
    stack.status_reason = f"rolling back (job {job_id})"
    service.event(session, stack.id, job_id, None, "rollback", "started",
                  "back to the last template that applied successfully" if stack.last_good_template is not None
                  else "no apply ever succeeded: deleting what the stack holds")


def _adopted(session: Any, stack: Stack, plan_number: int | None) -> frozenset[str]:
    """The resources the failed apply's template adopts (``external_id``): a rollback forgets them, it
    never deletes what it did not make."""
    if plan_number is None:
        return frozenset()
    row = service.get_plan(session, stack, plan_number)
    return frozenset(name for name, body in ((row.template or {}).get("resources") or {}).items()
                     if isinstance(body, dict) and body.get("external_id") is not None)


# ---------------------------------------------------------------- settle


def run_settle(ctx: StepContext) -> dict[str, Any]:
    operation = ctx.params.get("operation")
    failed = ctx.context.get("failed") or []
    with ctx.runtime.db.session() as session:
        stack = session.get(Stack, ctx.params["stack_id"])
        if stack is None:
            return {"deleted": True}
        recs = service.records(session, stack)
        if operation == "delete" and not recs and not failed:
            session.delete(stack)
            session.commit()
            ctx.log(f"stack {ctx.params['stack']} deleted")
            return {"deleted": True}
        rollback = ctx.context.get("rollback") or {}
        if operation != "delete":
            tmpl = plan.parse(stack.template)
            params = service.bind(tmpl, service.stored_parameters(stack, ctx.runtime.secret_box), stack)
            conditions = functions.evaluate_conditions(tmpl, params)
            stack.outputs = plan.outputs(tmpl, params, conditions, plan.context(params, conditions, recs, set()))
            if rollback.get("to") == "nothing":
                stack.outputs = {}
        if operation == "check":
            stack.status = StackStatus.DRIFTED if stack.drift else StackStatus.COMPLETE
            stack.status_reason = (f"{len(stack.drift)} resources drifted: {', '.join(sorted(stack.drift)[:10])}"
                                   if stack.drift else "no drift")
        elif failed and rollback:
            stack.status, stack.status_reason = _rolled_back(operation, failed, rollback)
        elif failed:
            stack.status = StackStatus.FAILED
            stack.status_reason = f"{operation} failed: {', '.join(failed[:10])}"
        else:
            stack.status, stack.status_reason = StackStatus.COMPLETE, f"{operation} complete"
            if operation == "converge":
                stack.drift = {}
            if operation in ("apply", "converge"):  # what a later rollback goes back to
                stack.last_good_template, stack.last_good_parameters = stack.template, stack.parameters
                stack.last_good_secret_parameters = stack.secret_parameters
        stack.serial += 1
        if rollback:
            service.event(session, stack.id, ctx.job_id, None, "rollback",
                          "succeeded" if stack.status == StackStatus.ROLLED_BACK else "failed", stack.status_reason)
        service.event(session, stack.id, ctx.job_id, None, operation, "failed" if failed else "succeeded",
                      stack.status_reason)
        session.commit()
        status, reason = stack.status, stack.status_reason
    if failed:
        results = ctx.context.get("resources") or {}
        raise PermanentFailure(f"{len(failed)} resources failed: " + ", ".join(
            f"{n} ({results.get(n, {}).get('action')}: {results.get(n, {}).get('error')})" for n in failed[:10])
            + (f"; {reason.split('; ', 1)[1]}" if rollback else ""), result={"status": status})
    return {"status": status}


def _rolled_back(operation: str, failed: list[str], rollback: dict[str, Any]) -> tuple[str, str]:
    """The stack's status and reason after a rollback: ``rolled_back`` when it completed."""
    where = "the last template that applied successfully" if rollback.get("to") == "template" else \
        "nothing (no apply of this stack ever succeeded: what it made was deleted)"
    head = f"{operation} failed: {', '.join(failed[:10])}"
    if rollback.get("complete") and not rollback.get("failed"):
        return StackStatus.ROLLED_BACK, f"{head}; rolled back to {where}"[:1000]
    undone = rollback.get("failed") or []
    return StackStatus.ROLLBACK_FAILED, (f"{head}; the rollback to {where} failed"
                                         + (f": {', '.join(undone[:10])}" if undone else " (stopped)")
                                         + "; the resources say what exists")[:1000]


def summarize(context: dict[str, Any]) -> dict[str, Any] | None:
    results = context.get("resources")
    if results is None:
        return None
    hosts = {k: r["status"] for k, r in results.items()}
    failed = sum(1 for v in hosts.values() if v != "succeeded")
    return {"hosts": hosts, "succeeded": len(hosts) - failed, "failed": failed}


# ---------------------------------------------------------------- the quick child


class _Deferred:
    """The step's context with its log lines kept until the transaction ends: on SQLite a log line written
    while this step's session holds the write lock would wait for that lock (a step blocking itself)."""

    def __init__(self, ctx: StepContext) -> None:
        self._ctx = ctx
        self.lines: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        self.lines.append((message, level))

    def flush(self) -> None:
        for message, level in self.lines:
            self._ctx.log(message, level=level)


def run_quick(ctx: StepContext) -> dict[str, Any]:
    deferred = _Deferred(ctx)
    try:
        return _run_quick(deferred)  # type: ignore[arg-type]
    finally:
        deferred.flush()


def _run_quick(ctx: StepContext) -> dict[str, Any]:
    with ctx.runtime.db.session() as session:
        record = session.get(StackResource, ctx.params["resource_id"])
        if record is None:
            raise PermanentFailure("the stack resource no longer exists")
        stack = session.get(Stack, record.stack_id)
        job = session.get(Job, ctx.job_id)
        act = Act(stack, record, ctx.params["action"], dict(record.pending or {}), job.parent_id,
                  {"user_id": job.user_id, "name": job.actor})
        get_type(record.type).run(ctx, session, act)
        session.commit()
        return {"physical_id": record.physical_id}


STACK_APPLY = Workflow(
    service.APPLY_WORKFLOW,
    [StepSpec("observe", run_observe, timeout_s=3600, max_attempts=3),
     StepSpec("resources", run_resources, ("observe",), timeout_s=7 * 86400, max_attempts=5),
     StepSpec("rollback", run_rollback, ("resources",), timeout_s=7 * 86400, max_attempts=5),
     StepSpec("settle", run_settle, ("rollback",), timeout_s=300, max_attempts=5)],
    failure_state=None, description="A stack's apply, converge or delete: one child job per resource action "
                                    "(and, with rollback, the way back to the last good template)",
    summarize=summarize,
)
STACK_CHECK = Workflow(
    service.CHECK_WORKFLOW,
    [StepSpec("observe", run_observe, timeout_s=3600, max_attempts=3),
     StepSpec("settle", run_settle, ("observe",), timeout_s=300, max_attempts=5)],
    failure_state=None, description="A stack's check: every resource's actual state, drift recorded",
)
STACK_RESOURCE = Workflow(
    QUICK_WORKFLOW, [StepSpec("act", run_quick, timeout_s=600, max_attempts=3)],
    failure_state=None, description="One quick stack resource action (a profile, an address, a DNS record)",
)
WORKFLOWS = (STACK_APPLY, STACK_CHECK, STACK_RESOURCE)

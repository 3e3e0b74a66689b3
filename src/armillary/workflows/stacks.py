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
"""

from __future__ import annotations

import time
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
                time.sleep(POLL_S)
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
        if record is None:
            record = StackResource(stack_id=stack.id, name=name, type=change.type, properties={}, attributes={},
                                   drift={}, pending={}, depends_on=[], deletion_policy="delete")
            session.add(record)
            session.flush()
        if resource is not None:
            record.depends_on = sorted(resource.depends_on)
            record.deletion_policy = resource.deletion_policy
        record.type, record.pending, record.action = change.type, props, change.action
        record.status = ResourceStatus.DELETING if change.action == "delete" else ResourceStatus.PENDING
        kind = get_type(change.type)
        act = Act(stack, record, change.action, props, self.ctx.job_id, self.actor, self.ctx.runtime.secret_box)
        job = None
        if change.action == "adopt":
            kind.adopt(session, act, str(resource.external_id))
        elif change.action != "forget":
            job = kind.start(session, act)
        if job is not None:
            session.flush()
            record.job_id = job.id
        service.event(session, stack.id, job.id if job else None, name, change.action, "started",
                      change.reason or (", ".join(change.fields) if change.fields else ""))
        return job

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
    operation = ctx.params.get("operation")
    if operation != "delete":
        tmpl, params = _state(ctx)
        conditions = functions.evaluate_conditions(tmpl, params)
        active = graph.active_resources(tmpl, conditions)
        for index, layer in enumerate(graph.layers(tmpl, conditions)):
            if walk.failed:
                break
            _layer(ctx, walk, tmpl, params, conditions, active, layer, index)
        keep = set(active)
    else:
        keep = set()
    if not walk.failed:
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
                      for c in plan.deletions({n: recs[n] for n in left}, set())])
    failed = sorted(n for n, r in walk.results.items() if r["status"] != "succeeded")
    ctx.log(f"resources: {len(walk.results) - len(failed)} ✔, {len(failed)} ✗")
    return {"resources": walk.results, "failed": failed}


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
        if change.action != "no-op":
            items.append((name, change, resource, props))
    walk.run(items)


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
        if operation != "delete":
            tmpl = plan.parse(stack.template)
            params = service.bind(tmpl, service.stored_parameters(stack, ctx.runtime.secret_box), stack)
            conditions = functions.evaluate_conditions(tmpl, params)
            stack.outputs = plan.outputs(tmpl, params, conditions, plan.context(params, conditions, recs, set()))
        if operation == "check":
            stack.status = StackStatus.DRIFTED if stack.drift else StackStatus.COMPLETE
            stack.status_reason = (f"{len(stack.drift)} resources drifted: {', '.join(sorted(stack.drift)[:10])}"
                                   if stack.drift else "no drift")
        elif failed:
            stack.status = StackStatus.FAILED
            stack.status_reason = f"{operation} failed: {', '.join(failed[:10])}"
        else:
            stack.status, stack.status_reason = StackStatus.COMPLETE, f"{operation} complete"
            if operation == "converge":
                stack.drift = {}
        stack.serial += 1
        service.event(session, stack.id, ctx.job_id, None, operation, "failed" if failed else "succeeded",
                      stack.status_reason)
        session.commit()
        status = stack.status
    if failed:
        results = ctx.context.get("resources") or {}
        raise PermanentFailure(f"{len(failed)} resources failed: " + ", ".join(
            f"{n} ({results.get(n, {}).get('action')}: {results.get(n, {}).get('error')})" for n in failed[:10]),
            result={"status": status})
    return {"status": status}


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
     StepSpec("settle", run_settle, ("resources",), timeout_s=300, max_attempts=5)],
    failure_state=None, description="A stack's apply, converge or delete: one child job per resource action",
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

"""``run_step``: the one function that does work, whatever dispatches it (inline pool or Celery).

It claims a step with a lease, runs its function with the job's context under a timeout, and
records the outcome in one transaction: the step's status, the context it added, the next
steps that became ready, or the end of the job. If this worker lost its lease meanwhile (it
stalled and the reaper gave the step to someone else), the outcome is dropped, not recorded twice.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from armillary.domain.jobs import TERMINAL_JOB, Job, JobStatus, Step, StepStatus
from armillary.domain.models import System, utcnow
from armillary.engine.context import StepContext
from armillary.engine.errors import PermanentStepError, StepTimeout, is_transient
from armillary.engine.events import emit
from armillary.engine.leases import claim_step, release_lock, still_mine
from armillary.engine.runtime import Runtime
from armillary.engine.workflows import get_workflow
from armillary.logs import request_id_var

log = logging.getLogger("armillary.engine")

MAX_BACKOFF_S = 300.0


def run_step(runtime: Runtime, step_id: int) -> None:
    """Run one step if it is due and nobody else holds it; a no-op otherwise."""
    claimed = _claim(runtime, step_id)
    if claimed is None:
        return
    ctx, timeout_s, request_id = claimed
    token = request_id_var.set(request_id)
    try:
        spec = get_workflow(ctx.params["_workflow"]).step(ctx.step)
        result, error = _execute(spec.fn, ctx, timeout_s, request_id)
        ready, ended = _record(runtime, step_id, result, error, spec.retry_base_s)
    finally:
        request_id_var.reset(token)
    for ready_id in ready:
        runtime.submit(ready_id)
    if ended:
        runtime.wake()


def _claim(runtime: Runtime, step_id: int) -> tuple[StepContext, float, str | None] | None:
    with runtime.db.session() as session:
        if not claim_step(session, step_id, runtime.worker_id, runtime.lease_s):
            return None
        step = session.get(Step, step_id)
        job = step.job
        if job.cancel_requested or job.status in TERMINAL_JOB:
            step.status, step.lease_owner, step.finished_at = StepStatus.CANCELLED.value, None, utcnow()
            emit(session, job.id, "step", f"{step.name} not started: the job was cancelled", step=step.name)
            session.commit()
            runtime.wake()
            return None
        if job.status == JobStatus.QUEUED.value:
            job.status, job.started_at = JobStatus.RUNNING.value, utcnow()
            emit(session, job.id, "job", "job running", data={"status": job.status})
        emit(session, job.id, "step", f"{step.name} started (attempt {step.attempts}/{step.max_attempts})",
             step=step.name, data={"status": "running", "attempt": step.attempts})
        ctx = StepContext(
            runtime=runtime,
            job_id=job.id,
            action=job.action,
            step=step.name,
            attempt=step.attempts,
            system_id=job.system_id,
            params={**job.params, "_workflow": job.workflow},
            context=dict(job.context or {}),
            deadline=time.monotonic() + step.timeout_s,
        )
        return ctx, step.timeout_s, job.request_id


def _execute(fn, ctx: StepContext, timeout_s: float, request_id: str | None) -> tuple[dict[str, Any], BaseException | None]:
    """Run the step body in its own thread so a hung body cannot hold the worker past its timeout.

    A body that overruns is abandoned (Python cannot kill a thread): its outcome is ignored and the
    step is retried as a transient failure; driver calls are idempotent, so the retry adopts.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        request_id_var.set(request_id)
        try:
            result = fn(ctx) or {}
            json.dumps(result)
            box["result"] = result
        except TypeError as exc:
            box["error"] = PermanentStepError(f"step returned data that is not JSON: {exc}")
        except BaseException as exc:  # noqa: BLE001 - every failure becomes the step's outcome
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"step-{ctx.job_id}-{ctx.step}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return {}, StepTimeout(f"{ctx.step} timed out after {timeout_s:g}s")
    return box.get("result", {}), box.get("error")


def _record(
    runtime: Runtime, step_id: int, result: dict[str, Any], error: BaseException | None, retry_base_s: float
) -> tuple[list[int], bool]:
    with runtime.db.session() as session:
        if not still_mine(session, step_id, runtime.worker_id):
            log.warning("step %s finished after its lease was lost; outcome dropped (a retry owns it)", step_id)
            return [], False
        step = session.get(Step, step_id)
        job = step.job
        now = utcnow()
        step.lease_owner, step.lease_expires_at = None, None
        if error is None:
            step.status, step.finished_at, step.result = StepStatus.SUCCEEDED.value, now, result
            job.context = {**(job.context or {}), **result}
            emit(session, job.id, "step", f"{step.name} succeeded", step=step.name, data={"status": "succeeded"})
            return advance(session, job, runtime)
        message = f"{type(error).__name__}: {error}" if not str(error) else str(error)
        step.error = message
        if is_transient(error) and step.attempts < step.max_attempts:
            delay = min(retry_base_s * 2 ** (step.attempts - 1), MAX_BACKOFF_S)
            step.status, step.next_attempt_at = StepStatus.QUEUED.value, now + timedelta(seconds=delay)
            emit(session, job.id, "step", f"{step.name} failed transiently ({message}); retry in {delay:g}s",
                 step=step.name, level="warning", data={"status": "retrying", "delay_s": delay})
            return [], False
        step.status, step.finished_at = StepStatus.FAILED.value, now
        emit(session, job.id, "step", f"{step.name} failed: {message}", step=step.name, level="error",
             data={"status": "failed"})
        finish_job(session, job, JobStatus.FAILED, error=f"{step.name}: {message}")
        return [], True


def advance(session: Session, job: Job, runtime: Runtime) -> tuple[list[int], bool]:
    """Queue the steps whose dependencies all succeeded; end the job when every step has."""
    if job.cancel_requested:
        runtime.wake()  # the dispatcher cancels it (and compensates) now that no step runs
        return [], False
    done = {s.name for s in job.steps if s.status == StepStatus.SUCCEEDED.value}
    if len(done) == len(job.steps):
        finish_job(session, job, JobStatus.SUCCEEDED)
        return [], True
    ready = []
    for step in job.steps:
        if step.status == StepStatus.PENDING.value and set(step.depends_on) <= done:
            step.status, step.next_attempt_at = StepStatus.QUEUED.value, None
            ready.append(step)
    session.flush()
    return [s.id for s in ready], False


def finish_job(session: Session, job: Job, status: JobStatus, error: str | None = None) -> None:
    """End a job: its status, its remaining steps, its lock, its system's state, and a final event."""
    job.status, job.finished_at, job.error = status.value, utcnow(), error
    session.execute(
        update(Step)
        .where(Step.job_id == job.id, Step.status.in_([StepStatus.PENDING.value, StepStatus.QUEUED.value]))
        .values(status=StepStatus.CANCELLED.value, finished_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    release_lock(session, job)
    system = session.get(System, job.system_id) if job.system_id else None
    if system is not None:
        if status is JobStatus.FAILED:
            failure_state = get_workflow(job.workflow).failure_state
            if failure_state:
                system.state, system.updated_at = failure_state, utcnow()
        elif status is JobStatus.CANCELLED and job.context.get("initial_state"):
            system.state, system.updated_at = job.context["initial_state"], utcnow()
        job.summary = {**(job.summary or {}), "hosts": {system.hostname: status.value}}
    mark = {"succeeded": "✔", "failed": "✗", "cancelled": "✗"}[status.value]
    detail = f": {error}" if error else ""
    emit(session, job.id, "job", f"{mark} job {status.value}{detail}", level="error" if error else "info",
         data={"status": status.value, "summary": job.summary})

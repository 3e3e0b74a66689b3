"""Cancelling a job: stop at the next step boundary, undo completed steps that can be undone.

``POST /jobs/{id}/cancel`` only sets ``cancel_requested``. A running step finishes (or times out);
then no further step starts, and the dispatcher calls ``cancel_now``: each completed step with a
compensation has it run once (claimed with a conditional UPDATE, so two processes never both
compensate), newest first, and the job ends ``cancelled`` with its system back in its prior state.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import exists, select, update

from armillary.domain import quotas
from armillary.domain.jobs import TERMINAL_JOB, Job, JobStatus, Step, StepStatus
from armillary.engine.context import StepContext
from armillary.engine.events import emit
from armillary.engine.runner import finish_job
from armillary.engine.runtime import Runtime
from armillary.engine.workflows import get_workflow

log = logging.getLogger("armillary.engine")


def cancellable_jobs(runtime: Runtime) -> list[int]:
    """Jobs asked to cancel that have no step running: the ones ready to be cancelled now."""
    running = exists().where(Step.job_id == Job.id, Step.status == StepStatus.RUNNING.value)
    with runtime.db.session() as session:
        return list(
            session.scalars(
                select(Job.id).where(
                    Job.cancel_requested.is_(True),
                    Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
                    ~running,
                ).limit(100)
            )
        )


def cancel_now(runtime: Runtime, job_id: int) -> None:
    with runtime.db.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.status in TERMINAL_JOB:
            return
        session.execute(
            update(Step)
            .where(Step.job_id == job_id, Step.status.in_([StepStatus.PENDING.value, StepStatus.QUEUED.value]))
            .values(status=StepStatus.CANCELLED.value)
            .execution_options(synchronize_session=False)
        )
        if session.scalar(select(exists().where(Step.job_id == job_id, Step.status == StepStatus.RUNNING.value))):
            return  # a step was claimed meanwhile: it ends, then we come back
        workflow = get_workflow(job.workflow)
        done = [s for s in reversed(job.steps) if s.status == StepStatus.SUCCEEDED.value and not s.compensated]
        snapshot = (job.action, job.system_id, dict(job.params), dict(job.context or {}))
    for step in done:
        spec = workflow.step(step.name)
        if spec.compensate is None or not _claim_compensation(runtime, step.id):
            continue
        action, system_id, params, context = snapshot
        ctx = StepContext(runtime, job_id, action, step.name, 1, system_id, params, context,
                          deadline=time.monotonic() + spec.timeout_s)
        ctx.log(f"compensating {step.name}")
        try:
            spec.compensate(ctx)
        except Exception as exc:  # noqa: BLE001 - a failed undo is reported, the cancel still ends
            log.exception("compensation of %s failed", step.name)
            ctx.log(f"compensation of {step.name} failed: {exc}", level="error")
    with runtime.db.session() as session:
        job = session.get(Job, job_id)
        if job.status not in TERMINAL_JOB:
            emit(session, job.id, "job", "cancelled at a step boundary")
            finish_job(session, job, JobStatus.CANCELLED)
            if job.system_id is not None:  # a create cancelled before its machine existed holds no quota
                quotas.release_if_unused(session, job.system_id)
    runtime.wake()


def _claim_compensation(runtime: Runtime, step_id: int) -> bool:
    with runtime.db.session() as session:
        result = session.execute(
            update(Step).where(Step.id == step_id, Step.compensated.is_(False)).values(compensated=True)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

"""Rows as the API shows them: the output models of what more than one router answers with.

Not a router. A system (``/systems``, ``/groups/{ref}/systems``), a user (``/users``, ``/auth/me``)
and a job (``/jobs``, ``/systems/{ref}/actions``) look the same wherever they appear; a view that
only one router uses stays in that router.
"""

from __future__ import annotations

from armillary.domain.account_schemas import GrantOut, Quota, Usage, UserOut
from armillary.domain.accounts import RoleGrant, User
from armillary.domain.job_schemas import JobOut, StepOut
from armillary.domain.jobs import Job
from armillary.domain.models import System
from armillary.domain.schemas import MachineProps, SystemOut
from armillary.redaction import redact_data

# SystemOut.machine field → System column
MACHINE_COLUMNS = {"user": "user", "os": "os", "cpu": "cpu", "memory": "memory_mb", "disk": "disk_gb",
                   "addresses": "addresses"}


def system_out(system: System) -> SystemOut:
    return SystemOut(
        id=system.id,
        hostname=system.hostname,
        environment={"id": system.environment.id, "name": system.environment.name},
        hypervisor={"id": system.hypervisor.id, "name": system.hypervisor.name} if system.hypervisor else None,
        driver_name=system.hypervisor.driver if system.hypervisor else None,
        type={"id": system.type.id, "name": system.type.name} if system.type else None,
        machine=MachineProps.model_construct(
            **{field: getattr(system, column) for field, column in MACHINE_COLUMNS.items()}
        ),
        driver=system.driver_props,
        labels={label.key: label.value for label in system.labels},
        variables=system.variables,
        state=system.state,
        owner=system.owner.name if system.owner is not None else None,
        created_at=system.created_at,
        updated_at=system.updated_at,
        version=system.version,
    )


def grant_out(grant: RoleGrant) -> GrantOut:
    return GrantOut(
        environment=grant.environment.name, environment_id=grant.environment_id, role=grant.role, source=grant.source,
        quota=Quota(max_systems=grant.max_systems, max_cpu=grant.max_cpu, max_memory_mb=grant.max_memory_mb),
        usage=Usage(systems=grant.used_systems, cpu=grant.used_cpu, memory_mb=grant.used_memory_mb),
    )


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id, name=user.name, display_name=user.display_name, email=user.email, source=user.source,
        admin=user.is_admin, active=user.active, last_login_at=user.last_login_at, created_at=user.created_at,
        roles=[grant_out(g) for g in sorted(user.grants, key=lambda g: g.environment.name)],
    )


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id, action=job.action, workflow=job.workflow, status=job.status, system_id=job.system_id,
        parent_id=job.parent_id, params=redact_data(job.params), context=redact_data(job.context or {}), error=job.error, summary=job.summary,
        cancel_requested=job.cancel_requested,
        waiting_for_lock=job.status == "queued" and not job.holds_lock,
        request_id=job.request_id, actor=job.actor, created_at=job.created_at, started_at=job.started_at,
        finished_at=job.finished_at,
        steps=[StepOut.model_validate(step, from_attributes=True) for step in job.steps],
    )

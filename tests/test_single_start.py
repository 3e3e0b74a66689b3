"""Starting one job (``engine.jobs.start_system_action``, what ``POST /systems/{ref}/actions`` calls), on a
real database (SQLite, then PostgreSQL).

Its rows are written with plain INSERTs and its ORM objects made from the rows they return: the job it
hands back must be the stored one, steps included, without a query reading it back; and a lock left
behind by an ended job is taken over as before.
"""

from __future__ import annotations

from uuid import uuid4

import pytest
from sqlalchemy import event, update

from armillary.domain.accounts import QuotaCharge, RoleGrant, User
from armillary.domain.jobs import Job, Lock, StepStatus
from armillary.domain.models import Environment, Hypervisor, System
from armillary.engine.jobs import start_system_action
from armillary.engine.workflows import load_workflows

JOB_COLUMNS = [column.key for column in Job.__table__.columns]
STEP_COLUMNS = ["id", "job_id", "name", "position", "depends_on", "status", "attempts", "max_attempts", "timeout_s",
                "next_attempt_at", "lease_owner", "lease_expires_at", "started_at", "finished_at", "error",
                "result", "compensated"]


@pytest.fixture(scope="module", autouse=True)
def workflows() -> None:
    load_workflows()


def _system(db) -> int:
    """A defined system owned by a user with a quota in its environment; its id."""
    tag = uuid4().hex[:8]
    with db.session() as session:
        env = Environment(name=f"env-{tag}")
        hypervisor = Hypervisor(name=f"sim-{tag}", environment=env, driver="simulated", config={}, secret_fields=[])
        owner = User(name=f"owner-{tag}", source="local")
        session.add_all([env, hypervisor, owner])
        session.flush()
        session.add(RoleGrant(user_id=owner.id, environment_id=env.id, role="user", max_systems=5))
        system = System(hostname=f"n-{tag}", environment=env, hypervisor=hypervisor, owner_id=owner.id, cpu=1,
                        memory_mb=512)
        session.add(system)
        session.flush()
        return system.id


def test_the_job_handed_back_is_the_stored_one_and_reading_it_runs_no_query(db) -> None:
    system_id = _system(db)
    statements: list[str] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    with db.session() as session:
        job = start_system_action(session, session.get(System, system_id), "create", params={"p": 1},
                                  idempotency_key=f"key-{system_id}", request_id="req-1", user_id=7, actor="tester")
        assert not (session.new or session.dirty)  # nothing left for the flush: the rows are written
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            handed = {key: getattr(job, key) for key in JOB_COLUMNS}
            handed_steps = [{key: getattr(step, key) for key in STEP_COLUMNS} for step in job.steps]
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert statements == []
    with db.session() as session:
        stored = session.get(Job, handed["id"])
        assert handed == {key: getattr(stored, key) for key in JOB_COLUMNS}
        assert handed_steps == [{key: getattr(step, key) for key in STEP_COLUMNS} for step in stored.steps]
        assert (stored.status, stored.holds_lock, stored.idempotency_key, stored.actor) == (
            "queued", True, f"key-{system_id}", "tester")
        assert [(s.name, s.status) for s in stored.steps] == [("prepare", StepStatus.QUEUED.value),
                                                             ("create_machine", StepStatus.PENDING.value)]
        assert session.get(Lock, f"system:{system_id}").job_id == stored.id
        assert session.get(QuotaCharge, system_id) is not None


def test_a_lock_left_by_an_ended_job_is_taken_over(db) -> None:
    system_id = _system(db)
    with db.session() as session:
        first = start_system_action(session, session.get(System, system_id), "create").id
    with db.session() as session:  # it ended, and its lock row stayed (a crash between the two)
        session.execute(update(Job).where(Job.id == first).values(status="failed"))
        session.execute(update(System).where(System.id == system_id).values(state="error"))
    with db.session() as session:
        second = start_system_action(session, session.get(System, system_id), "destroy")
        assert second.id != first and second.holds_lock and [s.name for s in second.steps]
    with db.session() as session:
        assert session.get(Lock, f"system:{system_id}").job_id == second.id
        assert session.get(Job, second.id).holds_lock

"""Starting a bulk wave in one transaction (``engine.jobs.start_system_actions``) and waking a batch
when a job ends (``engine.jobs.JOB_ENDS``), on a real database (SQLite, then PostgreSQL).

The wave must refuse exactly what ``start_system_action`` refuses, system by system, and write the
rest as if each had been started alone: job, queued first step, lock, event, quota charge.
"""

from __future__ import annotations

import threading
import time
from uuid import uuid4

import pytest
from sqlalchemy import event, func, select

from armillary.domain.accounts import QuotaCharge, RoleGrant, User
from armillary.domain.errors import EnvironmentLocked, QuotaExceeded
from armillary.domain.jobs import Job, JobEvent, Lock, Step, StepStatus
from armillary.domain.models import Environment, Hypervisor, System
from armillary.domain.secrets import SecretBox
from armillary.engine.jobs import (
    JobEnds,
    Locked,
    StateConflict,
    start_system_action,
    start_system_actions,
)
from armillary.engine.service import Engine
from armillary.engine.workflows import load_workflows
from armillary.workflows.bulk import submit_selection


@pytest.fixture(scope="module", autouse=True)
def workflows() -> None:
    load_workflows()


def _world(db, *, systems: int, locked_env: bool = False, max_systems: int | None = None,
           owned: bool = True) -> list[int]:
    """An environment with ``systems`` defined systems owned by a user with a quota there (or by
    nobody); their ids."""
    tag = uuid4().hex[:8]
    with db.session() as session:
        env = Environment(name=f"env-{tag}", locked=locked_env, locked_by="ops" if locked_env else None)
        hypervisor = Hypervisor(name=f"sim-{tag}", environment=env, driver="simulated", config={}, secret_fields=[])
        owner = User(name=f"owner-{tag}", source="local")
        session.add_all([env, hypervisor, owner])
        session.flush()
        session.add(RoleGrant(user_id=owner.id, environment_id=env.id, role="user", max_systems=max_systems))
        rows = [System(hostname=f"n{i}-{tag}", environment=env, hypervisor=hypervisor,
                       owner_id=owner.id if owned else None, cpu=1,
                       memory_mb=512) for i in range(systems)]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _load(session, ids: list[int]) -> list[System]:
    return [session.get(System, system_id) for system_id in ids]


def test_a_wave_writes_what_single_starts_write_in_a_few_statements(db) -> None:
    ids = _world(db, systems=20)
    statements: list[str] = []
    ready: list[int] = []

    def count(conn, cursor, statement, *args) -> None:
        statements.append(statement)

    with db.session() as session:
        systems = _load(session, ids)
        event.listen(db.engine, "before_cursor_execute", count)
        try:
            started = start_system_actions(session, systems, "create", params={"bulk": {"wave": 20}}, parent_id=None,
                                           user_id=None, actor="tester", ready=ready)
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
    assert set(started) == set(ids) and all(isinstance(job_id, int) for job_id in started.values())
    assert len(ready) == len(ids)
    inserts = [s.split("(")[0].split()[-1] for s in statements if s.lstrip().upper().startswith("INSERT")]
    # One multi-row INSERT of the jobs, of their steps, of their locks and of their "job queued" events
    # (plus each job's quota charge, written as by the single start).
    assert inserts.count("jobs") == 1 and inserts.count("steps") == 1 and inserts.count("locks") == 1, inserts
    assert inserts.count("job_events") == 1, inserts
    with db.session() as session:
        for system_id, job_id in started.items():
            job = session.get(Job, job_id)
            assert (job.system_id, job.action, job.status, job.holds_lock, job.actor) == (
                system_id, "create", "queued", True, "tester")
            assert job.params == {"bulk": {"wave": 20}} and job.context["hostname"].startswith("n")
            steps = session.scalars(select(Step).where(Step.job_id == job_id).order_by(Step.position)).all()
            assert [(s.name, s.status) for s in steps] == [("prepare", StepStatus.QUEUED.value),
                                                          ("create_machine", StepStatus.PENDING.value)]
            assert steps[0].id in ready and steps[1].id not in ready  # the queued steps, for ``Runtime.submit``
            assert session.get(Lock, f"system:{system_id}").job_id == job_id
            assert session.get(QuotaCharge, system_id) is not None
            assert session.scalar(select(func.count()).select_from(JobEvent).where(JobEvent.job_id == job_id)) == 1


def test_each_refusal_is_that_system_s_and_the_others_start(db) -> None:
    ids = _world(db, systems=4, max_systems=2)
    with db.session() as session:
        busy = start_system_action(session, session.get(System, ids[0]), "create")  # holds ids[0], charges 1
        session.get(System, ids[1]).state = "ready"  # create refused: wrong state
    ready: list[int] = []
    with db.session() as session:
        started = start_system_actions(session, _load(session, ids), "create", ready=ready)
    assert isinstance(started[ids[0]], Locked) and f"job {busy.id}" in started[ids[0]].detail
    assert isinstance(started[ids[1]], StateConflict)
    assert isinstance(started[ids[2]], int)  # the second of the quota's two systems
    assert isinstance(started[ids[3]], QuotaExceeded)
    with db.session() as session:
        grant = session.scalars(select(RoleGrant).where(RoleGrant.user_id == session.get(System, ids[0]).owner_id)).one()
        assert grant.used_systems == 2  # the refused ones took nothing
        assert session.get(Lock, f"system:{ids[3]}") is None
        # Only the started job's first step is handed out: none of a refused (or dropped) one's.
        assert set(session.scalars(select(Step.job_id).where(Step.id.in_(ready)))) == {started[ids[2]]}


def test_a_locked_environment_refuses_all_but_admins(db) -> None:
    ids = _world(db, systems=2, locked_env=True)
    with db.session() as session:
        refused = start_system_actions(session, _load(session, ids), "create")
    assert all(isinstance(outcome, EnvironmentLocked) for outcome in refused.values())
    with db.session() as session:
        started = start_system_actions(session, _load(session, ids), "create", bypass_lock=True)
    assert all(isinstance(outcome, int) for outcome in started.values())


def test_a_lock_taken_after_the_look_raises_locked_and_nothing_stays(db) -> None:
    """A request that locks a system between the wave's look at the locks and its INSERT: the wave
    raises ``Locked`` (its caller rolls back and starts the wave again), and leaves nothing behind."""
    ids = _world(db, systems=3, owned=False)  # no quota charge: the wave writes nothing before its jobs
    with db.session() as session:
        other = start_system_action(session, session.get(System, ids[1]), "create")
        lock = session.get(Lock, f"system:{ids[1]}")
        expires = lock.expires_at
        session.delete(lock)  # the wave will not see it...
    raced: list[bool] = []

    def race(conn, cursor, statement, *args) -> None:
        if statement.lstrip().startswith("INSERT INTO jobs") and not raced:
            raced.append(True)  # ...and the request takes it right before the wave writes its jobs
            with db.engine.begin() as racing:
                racing.execute(Lock.__table__.insert().values(resource=f"system:{ids[1]}", job_id=other.id,
                                                              expires_at=expires))

    with db.session() as session:
        systems = _load(session, ids)
        event.listen(db.engine, "before_cursor_execute", race)
        try:
            with pytest.raises(Locked):
                start_system_actions(session, systems, "create")
        finally:
            event.remove(db.engine, "before_cursor_execute", race)
        session.rollback()
    assert raced
    with db.session() as session:
        assert session.scalars(select(Job.id).where(Job.system_id.in_([ids[0], ids[2]]))).all() == []
        assert session.get(Lock, f"system:{ids[0]}") is None


def test_job_ends_wakes_a_waiter_at_once_and_misses_no_end() -> None:
    ends = JobEnds()
    mark = ends.seen()
    ends.ended()  # between a waiter's look and its wait
    started = time.monotonic()
    assert ends.wait(mark, 5.0) != mark and time.monotonic() - started < 1.0
    mark = ends.seen()
    threading.Timer(0.05, ends.ended).start()
    started = time.monotonic()
    assert ends.wait(mark, 5.0) != mark
    assert 0.03 < time.monotonic() - started < 2.0
    started = time.monotonic()
    assert ends.wait(ends.seen(), 0.05) == ends.seen()  # nothing ended: the timeout
    assert time.monotonic() - started >= 0.04


def test_a_retried_batch_adopts_the_children_an_earlier_attempt_started(db) -> None:
    """A batch's first attempt looks for no earlier children (there can be none); a retry must, or it
    would start a twin of each child the attempt before it started."""
    ids = _world(db, systems=3, owned=False)
    with db.session() as session:
        parent = submit_selection(session, action="create", system_ids=ids, batch_size=None, concurrency=2,
                                  on_failure="continue")
        # As if a first attempt of batch-1 had started this child, then lost its lease.
        earlier = start_system_action(session, session.get(System, ids[0]), "create", parent_id=parent.id)
        session.scalars(select(Step).where(Step.job_id == parent.id)).one().attempts = 1
    job = _run_until_ended(db, parent.id)
    assert job.status == "succeeded", job.error
    with db.session() as session:
        children = session.scalars(select(Job).where(Job.parent_id == parent.id)).all()
        hostname = session.get(System, ids[0]).hostname
    assert sorted(child.system_id for child in children) == sorted(ids)  # no twin
    assert job.context["batch_1"][hostname]["job_id"] == earlier.id


def test_a_wave_s_refusals_name_the_lock_and_the_quota(db) -> None:
    """What a wave reads of its systems is only what starting a child checks: a refusal that needs
    more (the owner's name, the environment's lock) still says it, as a single start would."""
    (frozen,) = _world(db, systems=1, locked_env=True, owned=False)
    limited = _world(db, systems=2, max_systems=1)
    with db.session() as session:
        parent = submit_selection(session, action="create", system_ids=[frozen, *limited], batch_size=None,
                                  concurrency=3, on_failure="continue", actor={"name": "someone", "admin": False})
        names = {system_id: session.get(System, system_id).hostname for system_id in (frozen, *limited)}
        owner = session.get(User, session.get(System, limited[0]).owner_id).name
    job = _run_until_ended(db, parent.id)
    results = job.context["batch_1"]
    assert "is locked by ops" in results[names[frozen]]["error"]
    statuses = sorted(results[names[system_id]]["status"] for system_id in limited)
    assert statuses == ["failed", "succeeded"]  # the quota holds one machine
    refused = next(names[system_id] for system_id in limited if results[names[system_id]]["status"] == "failed")
    assert results[refused]["error"].startswith(f"quota exceeded: {owner} may hold 1 systems")
    assert f"{refused} needs 1 more" in results[refused]["error"]


def _run_until_ended(db, job_id: int) -> Job:
    """Run an engine until job ``job_id`` ended (60 s at most); the job as it ended."""
    engine = Engine(db, SecretBox("k"), workers=4, lease_s=5.0, poll_s=0.05)
    engine.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with db.session() as session:
                job = session.get(Job, job_id)
                if job.status in ("succeeded", "failed", "cancelled"):
                    return job
            time.sleep(0.05)
    finally:
        engine.stop()
    raise AssertionError(f"job {job_id} still {job.status} after 60 s")

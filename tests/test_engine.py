"""Engine internals on a real database: graphs, retries, timeouts, leases, the reaper, schedules."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, select, update
from sqlalchemy.exc import OperationalError

from armillary.domain.db import Database
from armillary.domain.jobs import Job, Lock, Schedule, Step
from armillary.domain.models import utcnow
from armillary.domain.secrets import SecretBox
from armillary.engine import leases, runner
from armillary.engine.jobs import create_job
from armillary.engine.service import Engine
from armillary.engine.workflows import CycleError, StepSpec, Workflow, check_acyclic, register
from armillary.failures import PermanentFailure as PermanentStepError
from armillary.failures import TransientFailure as TransientStepError

CALLS: dict[str, int] = {}


def _count(name: str) -> int:
    CALLS[name] = CALLS.get(name, 0) + 1
    return CALLS[name]


def flaky(ctx):
    if _count(f"flaky-{ctx.job_id}") < 3:
        raise TransientStepError("not yet")
    return {"flaky": "ok"}


def broken(ctx):
    _count(f"broken-{ctx.job_id}")
    raise PermanentStepError("bad image")


def slow(ctx):
    time.sleep(5)
    return {}


def first(ctx):
    return {"a": 1}


def second(ctx):
    return {"b": ctx.context["a"] + 1}


def third(ctx):
    return {"c": ctx.context["a"] + 10}


def last(ctx):
    return {"sum": ctx.context["b"] + ctx.context["c"]}


def refused_once(ctx):
    """The first attempt's database refuses its connection (a real refusal: nothing listens on port 1)."""
    if _count(f"refused-{ctx.job_id}") == 1:
        engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2})
        try:
            engine.connect()
        finally:
            engine.dispose()
    return {"refused": "then served"}


register(Workflow("t-flaky", [StepSpec("flaky", flaky, max_attempts=5, retry_base_s=0.05)], failure_state=None))
register(Workflow("t-flaky-free", [StepSpec("one", first, max_attempts=3, retry_base_s=0.05)], failure_state=None))
register(Workflow("t-db-refused", [StepSpec("refused", refused_once, max_attempts=3, retry_base_s=0.05)],
                  failure_state=None))
register(Workflow("t-broken", [StepSpec("broken", broken, max_attempts=5)], failure_state=None))
register(Workflow("t-slow", [StepSpec("slow", slow, timeout_s=0.3, max_attempts=2, retry_base_s=0.05)],
                  failure_state=None))
register(Workflow("t-diamond", [
    StepSpec("first", first), StepSpec("second", second, ("first",)), StepSpec("third", third, ("first",)),
    StepSpec("last", last, ("second", "third")),
], failure_state=None))



@pytest.fixture
def engine(db: Database) -> Iterator[Engine]:
    CALLS.clear()  # job ids repeat across the two databases
    eng = Engine(db, SecretBox("k"), workers=4, lease_s=1.0, poll_s=0.05)
    eng.start()
    yield eng
    eng.stop()


def submit(db: Database, engine: Engine, workflow: str) -> int:
    with db.session() as session:
        job = create_job(session, action=workflow, workflow=workflow)
        session.flush()
        job_id = job.id
    engine.wake()
    return job_id


def test_cycles_are_refused_naming_the_cycle() -> None:
    with pytest.raises(CycleError) as caught:
        check_acyclic({"stop": ["start"], "update": ["stop"], "start": ["update"]})
    assert caught.value.cycle[0] == caught.value.cycle[-1] and len(caught.value.cycle) == 4
    assert "→" in str(caught.value)
    with pytest.raises(ValueError):
        Workflow("bad", [StepSpec("a", first, ("b",)), StepSpec("b", first, ("a",))])


def test_graph_runs_in_dependency_order_and_merges_context(db: Database, engine: Engine) -> None:
    job = engine.wait_for(submit(db, engine, "t-diamond"), 20)
    assert job.status == "succeeded"
    assert job.context == {"a": 1, "b": 2, "c": 11, "sum": 13}


def test_transient_errors_retry_permanent_do_not(db: Database, engine: Engine) -> None:
    flaky_job = engine.wait_for(submit(db, engine, "t-flaky"), 20)
    assert flaky_job.status == "succeeded"
    with db.session() as session:
        assert session.scalars(select(Step.attempts).where(Step.job_id == flaky_job.id)).one() == 3
    broken_id = submit(db, engine, "t-broken")
    broken_job = engine.wait_for(broken_id, 20)
    assert broken_job.status == "failed" and "bad image" in broken_job.error
    assert CALLS[f"broken-{broken_id}"] == 1


def test_a_step_whose_database_refused_a_connection_is_retried(db: Database, engine: Engine) -> None:
    job_id = submit(db, engine, "t-db-refused")
    assert engine.wait_for(job_id, 15).status == "succeeded"
    assert CALLS[f"refused-{job_id}"] == 2


def test_step_timeout_is_retried_then_fails(db: Database, engine: Engine) -> None:
    started = time.monotonic()
    job = engine.wait_for(submit(db, engine, "t-slow"), 20)
    assert job.status == "failed" and "timed out after 0.3s" in job.error
    assert time.monotonic() - started < 4  # the 5 s body was abandoned, not waited for
    with db.session() as session:
        assert session.scalars(select(Step.attempts).where(Step.job_id == job.id)).one() == 2


def test_expired_lease_of_a_dead_worker_is_retried_by_the_reaper(db: Database) -> None:
    """A worker claims a step and dies (never heartbeats): another process's reaper retries it."""
    with db.session() as session:
        job = create_job(session, action="t-diamond", workflow="t-diamond")
        session.flush()
        job_id, step_id = job.id, job.steps[0].id
    with db.session() as session:
        assert leases.claim_step(session, step_id, "dead-worker", lease_s=0.2)
    time.sleep(0.3)
    survivor = Engine(db, SecretBox("k"), workers=2, lease_s=1.0, poll_s=0.05)
    survivor.start()
    try:
        finished = survivor.wait_for(job_id, 20)
    finally:
        survivor.stop()
    assert finished.status == "succeeded"
    with db.session() as session:
        step = session.get(Step, step_id)
        assert step.attempts == 2 and step.lease_owner is None
        assert session.scalar(select(Lock).where(Lock.job_id == job_id)) is None


def failing_record(monkeypatch, failures: int, error: BaseException):
    """Make recording a step's outcome fail ``failures`` times, then work again (returns the call counter)."""
    real, calls = runner._record, {"n": 0}

    def record(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "_record", record)
    return calls


def test_a_step_whose_run_crashed_is_retried_while_its_worker_lives(db: Database, engine: Engine,
                                                                     monkeypatch) -> None:
    """``run_step`` crashed after its claim (in the recording): the live worker's heartbeat must not keep
    renewing that lease, or the job stays "running" for as long as the process lives (issue 23)."""
    failing_record(monkeypatch, 1, RuntimeError("recording crashed"))
    job = engine.wait_for(submit(db, engine, "t-flaky-free"), 15)
    assert job.status == "succeeded"
    with db.session() as session:
        assert session.scalars(select(Step.attempts).where(Step.job_id == job.id)).one() == 2


@pytest.mark.parametrize("failures, attempts", [(1, 1), (len(runner.RECORD_RETRY_PAUSES_S) + 1, 2)])
def test_a_deadlock_while_recording_is_tried_again_then_handed_back(db: Database, engine: Engine, monkeypatch,
                                                                    failures: int, attempts: int) -> None:
    """A deadlock (PostgreSQL) or a busy database (SQLite) while recording: the transaction is run again;
    when it keeps failing, the lease is handed back and the step retried at once, not after its lease."""
    deadlock = OperationalError("DELETE FROM locks ...", {}, Exception("deadlock detected"))
    calls = failing_record(monkeypatch, failures, deadlock)
    job = engine.wait_for(submit(db, engine, "t-flaky-free"), 15)
    assert job.status == "succeeded" and calls["n"] == failures + 1
    with db.session() as session:
        assert session.scalars(select(Step.attempts).where(Step.job_id == job.id)).one() == attempts


GATE = threading.Event()


def gated(ctx):
    assert GATE.wait(10), "the test never opened the gate"
    return {}


register(Workflow("t-gated", [StepSpec("gated", gated)], failure_state=None))


def test_a_worker_whose_job_ended_claims_the_next_queued_step_in_that_transaction(db: Database) -> None:
    """One worker, four jobs queued: the first job's step is claimed on its own, each later one in the
    transaction that recorded the end of the job before it (``Runtime.take_queued``), and all four run."""
    GATE.clear()
    engine = Engine(db, SecretBox("k"), workers=1, lease_s=5.0)
    claims: list[int] = []
    real_claim = runner._claim
    with db.session() as session:
        jobs = [create_job(session, action=w, workflow=w) for w in ("t-gated",) + ("t-flaky-free",) * 3]
        session.flush()
        job_ids, first_steps = [j.id for j in jobs], [j.steps[0].id for j in jobs]
    try:
        runner._claim = lambda runtime, step_id, *rest: claims.append(step_id) or real_claim(runtime, step_id, *rest)
        for step_id in first_steps:  # the first job's step holds the only worker until all are queued
            engine.executor.submit(step_id)
        GATE.set()
        statuses = [engine.wait_for(job_id, 15).status for job_id in job_ids]
    finally:
        runner._claim = real_claim
        engine.stop()
    assert statuses == ["succeeded"] * 4
    assert claims == first_steps[:1]
    with db.session() as session:
        attempts = session.scalars(select(Step.attempts).where(Step.id.in_(first_steps))).all()
    assert attempts == [1, 1, 1, 1]
    assert engine.executor.in_flight() == set()


def test_an_engine_starts_the_work_queued_before_it_started_at_once(db: Database) -> None:
    """A server (re)started with jobs queued begins them on its first tick, not after its first poll."""
    with db.session() as session:
        job = create_job(session, action="t-flaky-free", workflow="t-flaky-free")
        session.flush()
        job_id = job.id
    engine = Engine(db, SecretBox("k"), workers=1, lease_s=5.0, poll_s=30)
    started = time.monotonic()
    engine.start()
    try:
        assert engine.wait_for(job_id, 10).status == "succeeded"
        assert time.monotonic() - started < 5  # the poll is 30 s: nothing but the first tick ran it
    finally:
        engine.stop()


def test_exactly_one_of_many_claims_wins(db: Database) -> None:
    with db.session() as session:
        job = create_job(session, action="t-diamond", workflow="t-diamond")
        session.flush()
        step_id = job.steps[0].id
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def claim(n: int) -> None:
        barrier.wait()
        with db.session() as session:
            wins.append(leases.claim_step(session, step_id, f"w{n}", 5))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_schedule_fires_once_per_tick_across_processes(db: Database) -> None:
    """Two engines (as two server processes would) race for a due schedule: one job, not two."""
    from tests.support.seed import seed_simulated_systems

    seed_simulated_systems(db, "sched", count=2)
    spec = {"action": "create", "selector": {"labels": {"group": "sched"}}, "concurrency": 2,
            "batch_size": None, "on_failure": "stop", "params": {}}
    with db.session() as session:
        session.add(Schedule(name="nightly-sched", cron="0 3 * * *", spec=spec,
                             next_run_at=utcnow() - timedelta(seconds=1)))
    engines = [Engine(db, SecretBox("k"), workers=2, lease_s=1.0, poll_s=3600) for _ in range(2)]
    barrier = threading.Barrier(2)

    def tick(engine: Engine) -> None:
        barrier.wait()
        engine.tick()

    threads = [threading.Thread(target=tick, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.session() as session:
        schedule = session.scalars(select(Schedule).where(Schedule.name == "nightly-sched")).one()
        jobs = session.scalars(select(Job).where(Job.request_id == "schedule:nightly-sched")).all()
        assert len(jobs) == 1 and schedule.last_job_id == jobs[0].id
        assert schedule.next_run_at > utcnow() and schedule.next_run_at.hour == 3
        session.execute(update(Schedule).where(Schedule.id == schedule.id).values(enabled=False))
    for engine in engines:
        engine.executor.shutdown()

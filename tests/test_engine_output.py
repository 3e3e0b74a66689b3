"""A step's held output and the chaining of a job's steps (issue 13), on a real database.

A step's log lines and its ``update_system(..., with_outcome=True)`` changes ride in a transaction the
step makes anyway; a long step's lines still reach the database within ``engine.output.LIVE_S``; a
job's next step is claimed by the worker that recorded the one before it, in that same transaction.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import event, select

from armillary.domain.db import Database
from armillary.domain.jobs import Job, JobEvent
from armillary.domain.models import Environment, System
from armillary.domain.secrets import SecretBox
from armillary.engine.jobs import create_job
from armillary.engine.service import Engine
from armillary.engine.workflows import StepSpec, Workflow, register

RELEASE = threading.Event()
STARTED = threading.Event()


def chatty(ctx):
    ctx.log("line a")
    ctx.log("line b", level="warning")
    return {"one": 1}


def quiet_after(ctx):
    ctx.log("line c")
    return {"two": ctx.context["one"] + 1}


def plain(ctx):
    return {}


def long_running(ctx):
    ctx.log("still working")
    RELEASE.wait(10)
    return {}


def holds_a_state(ctx):
    ctx.update_system(state="creating", with_outcome=True)
    STARTED.set()
    RELEASE.wait(10)
    return {}


register(Workflow("t-out-lines", [StepSpec("one", chatty), StepSpec("two", quiet_after, ("one",))],
                  failure_state=None))
register(Workflow("t-out-chain", [StepSpec("a", plain), StepSpec("b", plain, ("a",)), StepSpec("c", plain, ("b",))],
                  failure_state=None))
register(Workflow("t-out-long", [StepSpec("long", long_running)], failure_state=None))
register(Workflow("t-out-held", [StepSpec("hold", holds_a_state)], failure_state=None))



@pytest.fixture
def engine(db: Database) -> Iterator[Engine]:
    RELEASE.clear()
    STARTED.clear()
    eng = Engine(db, SecretBox("k"), workers=4, lease_s=5.0, poll_s=0.05)
    eng.start()
    yield eng
    RELEASE.set()
    eng.stop()


def submit(db: Database, engine: Engine, workflow: str, system: System | None = None) -> int:
    with db.session() as session:
        job = create_job(session, action=workflow, workflow=workflow,
                         system=session.get(System, system.id) if system is not None else None)
        session.flush()
        job_id = job.id
    engine.wake()
    return job_id


def messages(db: Database, job_id: int) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(JobEvent.message).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def test_held_lines_are_committed_before_their_steps_outcome_in_order(db: Database, engine: Engine) -> None:
    job = engine.wait_for(submit(db, engine, "t-out-lines"), 20)
    assert job.status == "succeeded" and job.context == {"one": 1, "two": 2}
    seen = messages(db, job.id)
    expected = ["one started (attempt 1/5)", "line a", "line b", "one succeeded", "two started (attempt 1/5)",
                "line c", "two succeeded"]
    assert [m for m in seen if m in expected] == expected
    with db.session() as session:
        b = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.message == "line b")).one()
        assert b.level == "warning" and b.step == "one" and b.kind == "log"


def test_a_long_steps_lines_stream_while_it_runs(db: Database, engine: Engine) -> None:
    job_id = submit(db, engine, "t-out-long")
    deadline = time.monotonic() + 5
    while "still working" not in messages(db, job_id):
        assert time.monotonic() < deadline, "the line of a running step never reached the database"
        time.sleep(0.02)
    with db.session() as session:
        assert session.get(Job, job_id).status == "running"  # streamed live, not with the outcome
    RELEASE.set()
    assert engine.wait_for(job_id, 20).status == "succeeded"


def test_a_held_change_of_the_system_is_written_with_the_outcome(db: Database, engine: Engine) -> None:
    with db.session() as session:
        env = session.scalar(select(Environment).where(Environment.name == "held")) or Environment(name="held")
        system = System(hostname=f"held-{time.monotonic_ns()}", environment=env)
        session.add(system)
        session.flush()
        session.expunge(system)
    job_id = submit(db, engine, "t-out-held", system)
    assert STARTED.wait(10)
    time.sleep(0.3)  # longer than the flusher waits: only lines are flushed live (with what else is held)
    with db.session() as session:
        assert session.get(System, system.id).state == "defined"
    RELEASE.set()
    assert engine.wait_for(job_id, 20).status == "succeeded"
    with db.session() as session:
        after = session.get(System, system.id)
        assert after.state == "creating" and after.version == system.version + 1


def test_a_jobs_next_step_is_claimed_in_the_transaction_recording_the_one_before(db: Database,
                                                                                  engine: Engine) -> None:
    commits: list[str] = []

    def count(_conn) -> None:
        name = threading.current_thread().name
        if name.startswith("armillary-step-"):  # the workers' transactions: claims and records
            commits.append(name)

    event.listen(db.engine, "commit", count)
    try:
        job = engine.wait_for(submit(db, engine, "t-out-chain"), 20)
    finally:
        event.remove(db.engine, "commit", count)
    assert job.status == "succeeded"
    # One claim, then three records, the first two each claiming the next step: four transactions
    # for three steps (a claim and a record per step, six, without chaining), all in one worker.
    assert len(commits) == 4 and len(set(commits)) == 1, commits
    seen = messages(db, job.id)
    assert [m for m in seen if m.endswith("started (attempt 1/5)")] == [
        "a started (attempt 1/5)", "b started (attempt 1/5)", "c started (attempt 1/5)"]


def test_many_lines_at_once_are_the_rows_one_insert_each_would_be(db: Database) -> None:
    """``insert_lines`` writes a large batch as one statement on PostgreSQL (arrays): same rows, same order,
    redacted, JSON null for no data, as ``insert_event`` line by line."""
    from armillary.domain.models import utcnow
    from armillary.engine.events import insert_event, insert_lines
    from armillary.redaction import register as register_secret

    register_secret("hunter2-bulk-secret")
    lines = [(f"line {n} 'q' \\ ü hunter2-bulk-secret", "warning" if n % 3 else "info",
              None if n % 2 else {"n": n, "password": "x"}, utcnow()) for n in range(20)]
    with db.session() as session:
        batch, single = (create_job(session, action="t-out-lines", workflow="t-out-lines").id for _ in range(2))
    with db.engine.begin() as conn:
        insert_lines(conn, batch, "one", lines)
    with db.engine.begin() as conn:
        for message, level, data, at in lines:
            insert_event(conn, single, "log", message, step="one", level=level, data=data, created_at=at)

    def rows(job_id: int) -> list[tuple]:
        with db.session() as session:
            events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
            return [(e.kind, e.message, e.step, e.level, e.data, e.created_at) for e in events if e.kind == "log"]

    written = rows(batch)
    assert len(written) == 20 and written == rows(single)
    assert "hunter2-bulk-secret" not in written[0][1] and written[0][4] == {"n": 0, "password": "***"}
    assert [r[1].split()[1] for r in written] == [str(n) for n in range(20)]


def test_the_pages_of_many_jobs_are_read_together_each_after_its_own_id_and_within_its_limit(db: Database) -> None:
    """``pages_after`` (the live followers' reads): a job with a long backlog takes no place of another's
    events, each page starts after its own id and stops at its own limit, in order, with the job's status."""
    from armillary.engine import events

    with db.session() as session:
        jobs = [create_job(session, action="t-out-chain", workflow="t-out-chain")
                for _ in range(103)]
        session.flush()
        ids = [job.id for job in jobs]
        session.add_all([JobEvent(job_id=ids[0], kind="log", message=f"busy {n}", data={"n": n}) for n in range(50)])
        session.add_all([JobEvent(job_id=job_id, kind="log", message=f"line {n} of {job_id}")
                         for job_id in ids[1:] for n in range(3)])
        session.flush()
        rows = {job_id: session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)).all()
                for job_id in ids}
        wanted = {ids[0]: (0, 10), ids[1]: (rows[ids[1]][0].id, 500), ids[-1]: (0, 2),
                  **{job_id: (0, 500) for job_id in ids[2:-1]}}
        found = events.pages_after(session.connection(), {**wanted, 10**9: (0, 500)})
    assert set(found) == set(wanted)  # a job that is not there is left out, not an empty page
    assert {status for _, status in found.values()} == {"queued"}
    pages = {job_id: page for job_id, (page, _) in found.items()}
    assert len(rows[ids[0]]) > 50  # its own "job queued" line, then the backlog
    assert [e["id"] for e in pages[ids[0]]] == [e.id for e in rows[ids[0]][:10]]
    assert [e["id"] for e in pages[ids[1]]] == [e.id for e in rows[ids[1]][1:]]
    assert [e["id"] for e in pages[ids[-1]]] == [e.id for e in rows[ids[-1]][:2]]
    assert all([e["id"] for e in pages[job_id]] == [e.id for e in rows[job_id]] for job_id in ids[2:-1])
    first = rows[ids[2]][0]
    assert pages[ids[2]][0] == {"id": first.id, "job_id": ids[2], "kind": first.kind, "step": first.step,
                                "level": first.level, "message": first.message, "data": first.data,
                                "time": first.created_at.isoformat()}
    assert pages[ids[0]][5]["data"] == {"n": 4}
    if db.engine.dialect.name == "postgresql":  # the API's live reads: async psycopg, on its event loop
        assert asyncio.run(_pages_after_async(db, {**wanted, 10**9: (0, 500)})) == found


async def _pages_after_async(db: Database, wanted: dict) -> dict:
    import psycopg
    from psycopg.rows import namedtuple_row

    from armillary.domain.db import libpq_conninfo
    from armillary.engine import events

    conninfo = libpq_conninfo(db.engine.url.render_as_string(hide_password=False))
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True, row_factory=namedtuple_row) as aconn:
        return await events.pages_after_async(aconn, wanted)

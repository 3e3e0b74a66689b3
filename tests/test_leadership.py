"""Leadership of a chore among the processes on one database (a PostgreSQL advisory lock), and the notify
collector run by the leader only. Each ``Leadership`` or ``NotifyService`` here stands for a process: each
holds a connection of its own, as separate processes would."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select, text

from armillary.domain import migrate
from armillary.domain.db import Database
from armillary.domain.jobs import Job, JobEvent
from armillary.domain.leadership import Leadership
from armillary.domain.secrets import SecretBox
from armillary.notify.models import NotifyEvent
from armillary.notify.service import NotifyService
from tests.support.databases import postgres_database


@pytest.fixture(scope="module")
def pg() -> Iterator[Database]:
    with postgres_database() as url:
        db = Database(url)
        migrate.upgrade(db)
        yield db
        db.dispose()


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_one_process_leads_a_chore_and_another_takes_over_when_it_lets_go(pg: Database) -> None:
    first, second = Leadership(pg, "t-handover", try_s=0.05), Leadership(pg, "t-handover", try_s=0.05)
    other_chore = Leadership(pg, "t-handover-other", try_s=0.05)
    try:
        assert first.leads()
        assert not second.leads()
        assert other_chore.leads()  # chores are led apart
        first.close()
        assert eventually(second.leads, 2.0)
        assert not Leadership(pg, "t-handover", try_s=0.05).leads()
    finally:
        for leadership in (first, second, other_chore):
            leadership.close()


def test_a_leader_whose_session_ended_loses_the_lead_to_another(pg: Database) -> None:
    leader, follower = Leadership(pg, "t-cut", try_s=0.05), Leadership(pg, "t-cut", try_s=0.05)
    try:
        assert leader.leads() and not follower.leads()
        with pg.engine.connect() as conn:  # as when the leader's process dies or its connection is cut
            ended = conn.execute(text(
                "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid "
                "WHERE a.application_name LIKE 'armillary-leader:t-cut:%' AND l.locktype = 'advisory' AND l.granted "
                "AND a.datname = current_database()"
            )).scalars().all()
        assert ended == [True]
        assert eventually(follower.leads, 2.0)
        time.sleep(0.06)
        assert not leader.leads()  # it finds its connection gone, and the lock taken
        assert follower.leads()
    finally:
        leader.close()
        follower.close()


def test_on_sqlite_the_one_process_always_leads(tmp_path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'armillary.db'}")
    try:
        assert Leadership(db, "t-sqlite").leads() and Leadership(db, "t-sqlite").leads()
    finally:
        db.dispose()


def end_a_job(db: Database) -> str:
    """A job that ended (its final event): the collector makes it the event ``job:<id>``."""
    with db.session() as session:
        job = Job(action="stage", workflow="stage", status="succeeded")
        session.add(job)
        session.flush()
        session.add(JobEvent(job_id=job.id, kind="job", message="succeeded", data={"status": "succeeded"}))
        return f"job:{job.id}"


def stored(db: Database, source_key: str) -> int:
    with db.session() as session:
        return len(session.scalars(select(NotifyEvent.id).where(NotifyEvent.source_key == source_key)).all())


def test_of_two_servers_one_collects_and_the_other_takes_over_when_it_stops(pg: Database) -> None:
    services = [NotifyService(pg, SecretBox("k"), workers=2, poll_s=0.05) for _ in range(2)]
    passes = [0, 0]
    for n, service in enumerate(services):
        service.leadership.try_s = 0.1
        collect = service.collector.collect

        def counted(*args, n=n, collect=collect):
            passes[n] += 1
            return collect(*args)

        service.collector.collect = counted  # type: ignore[method-assign]
    services[0].start()
    assert eventually(services[0].leadership.leads)
    services[1].start()
    try:
        key = end_a_job(pg)
        assert eventually(lambda: stored(pg, key) == 1)
        assert passes[0] >= 1 and passes[1] == 0  # the follower read nothing
        assert not services[1].leadership.leads()
        services[0].stop()  # the leader goes: its lock with it
        later = end_a_job(pg)
        assert eventually(lambda: stored(pg, later) == 1)
        assert services[1].leadership.leads()
        assert stored(pg, key) == 1  # read again by the new leader (its window), stored once
    finally:
        for service in services:
            service.stop()

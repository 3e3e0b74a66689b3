"""The notification collector's passes on both backends: an idle pass reads no source, also while a burst's
window is still settling, and a row committed after newer ones is still collected by the next sweep."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from armillary.domain.jobs import Job, JobEvent
from armillary.notify import events
from armillary.notify.events import Collector, NewEvent, Source
from armillary.notify.models import NotifyEvent


class CountingJobEnds:
    """The jobs source, with every read counted and every row made an event of its own (no job lookups)."""

    def __init__(self, prefix: str = "collector-test") -> None:
        self.reads = 0
        self.prefix = prefix
        self.source = Source("jobs", self.read, self.to_events, "job_events", events.JOB_KIND_WHERE)

    def read(self, session: Any, after: int, upto: int | None, limit: int) -> list[Any]:
        self.reads += 1
        return events.SOURCES[0].read(session, after, upto, limit)

    def to_events(self, session: Any, rows: list[Any]) -> list[NewEvent]:
        return [NewEvent("job.finished", f"{self.prefix}:{row.id}", None, {}, "ended", row.created_at)
                for row in rows]


def caught_up(db, collector: Collector) -> None:
    """Passes until the collector has read every row other tests left."""
    with db.session() as session:
        collector.idle(session, 100.0)
        while collector.collect(session, 100.0).behind:
            collector.idle(session, 100.0)
        session.commit()


def add_job_ends(db, count: int) -> None:
    """``count`` job-end rows of a new job, with ids above every row there (given: a test here sets ids by
    hand, which PostgreSQL's sequence does not see)."""
    with db.session() as session:
        job = Job(action="stage", workflow="stage")
        session.add(job)
        session.flush()
        top = session.scalar(select(func.max(JobEvent.id))) or 0
        session.add_all([JobEvent(id=top + n, job_id=job.id, kind="job", message="succeeded",
                                  data={"status": "succeeded"}) for n in range(1, count + 1)])
        session.commit()


def test_an_idle_pass_reads_nothing_while_a_window_settles_and_a_late_row_is_swept(db) -> None:
    jobs = CountingJobEnds()
    collector = Collector(sources=(jobs.source,), settle_s=3600, sweep_s=5.0)
    with db.session() as session:
        job = Job(action="stage", workflow="stage")
        session.add(job)
        session.flush()
        first = JobEvent(job_id=job.id, kind="job", message="succeeded", data={"status": "succeeded"})
        session.add(first)
        session.flush()
        job_id, first_id = job.id, first.id
        later_id = first_id + 10
        session.add(JobEvent(id=later_id, job_id=job_id, kind="job", message="failed", data={"status": "failed"}))
        session.commit()
    with db.session() as session:
        assert not collector.idle(session, 100.0)
        assert collector.collect(session, 100.0).events == 2
        assert not collector.idle(session, 100.5)  # the new window's first sweep is due
        assert collector.collect(session, 100.5).events == 0
        session.commit()
    reads = jobs.reads
    with db.session() as session:  # the window is unsettled for an hour; nothing new: no reads
        assert collector.idle(session, 101.0) and collector.idle(session, 105.4)
    assert jobs.reads == reads
    with db.session() as session:  # a row committed after the newer one, with a lower id: max id unchanged
        session.add(JobEvent(id=first_id + 5, job_id=job_id, kind="job", message="late", data={"status": "failed"}))
        session.commit()
    with db.session() as session:
        assert collector.idle(session, 105.4)  # not found before the sweep is due...
        assert not collector.idle(session, 105.6)  # ...then a full pass, whose sweep finds it
        assert collector.collect(session, 105.6).events == 1
        session.commit()
    with db.session() as session:
        assert collector.idle(session, 106.0)
        keys = set(session.scalars(select(NotifyEvent.source_key).where(
            NotifyEvent.source_key.like("collector-test:%"))))
    assert keys == {f"collector-test:{i}" for i in (first_id, first_id + 5, later_id)}


def test_a_pass_says_when_it_is_behind_and_when_the_sender_has_work(db, monkeypatch) -> None:
    """Under load the service reads again at once only when a source had a whole batch, and wakes the
    sender only for deliveries: a pass per job ending, each waking the sender, took 1,581 collector and 306
    sender statements per 1,000 single creates while no subscription wanted any of it."""
    jobs = CountingJobEnds(prefix=f"behind-test-{uuid.uuid4().hex}")
    collector = Collector(sources=(jobs.source,), settle_s=3600, sweep_s=3600)
    caught_up(db, collector)
    monkeypatch.setattr(events, "BATCH", 2)
    add_job_ends(db, 3)
    with db.session() as session:
        assert not collector.idle(session, 100.0)
        first = collector.collect(session, 100.0)
        assert not collector.idle(session, 100.1)  # a batch is left: the next pass reads it, new rows or not
        second = collector.collect(session, 100.1)
        assert collector.idle(session, 100.2)
        session.commit()
    assert (first.events, first.deliveries, first.behind) == (2, 0, True)  # no subscription: nothing to send
    assert (second.events, second.behind) == (1, False)


def test_storing_events_again_stores_nothing_and_a_batch_keeps_its_new_ones(db) -> None:
    """``store_many`` runs one prebuilt INSERT … ON CONFLICT DO NOTHING RETURNING over a list of rows: the
    ids it answers are those of the rows that went in, whichever of the batch were there before."""
    prefix = f"store-test-{uuid.uuid4().hex}"
    first = [NewEvent("job.finished", f"{prefix}:{n}", None, {"n": n}, "ended", events.utcnow()) for n in (1, 2)]
    again = [*first, NewEvent("job.finished", f"{prefix}:3", None, {"n": 3}, "ended", events.utcnow())]
    with db.session() as session:
        assert events.store_many(session, first, []) == (2, 0)
        session.commit()
    with db.session() as session:
        assert events.store_many(session, again, []) == (1, 0)
        session.commit()
        stored = dict(session.execute(select(NotifyEvent.source_key, NotifyEvent.data).where(
            NotifyEvent.source_key.like(f"{prefix}:%"))).all())
    assert stored == {f"{prefix}:{n}": {"n": n} for n in (1, 2, 3)}


def test_a_pass_reads_only_the_sources_with_new_rows(db) -> None:
    """Under load every pass finds new job ends; the attention items and the lock events seldom change and
    are not read again while their newest id is what was read."""
    jobs = CountingJobEnds(prefix=f"only-new-{uuid.uuid4().hex}")
    attention_reads: list[int] = []

    def read_attention(session: Any, after: int, upto: int | None, limit: int) -> list[Any]:
        attention_reads.append(after)
        return events.SOURCES[1].read(session, after, upto, limit)

    attention = Source("attention", read_attention, lambda session, rows: [], "attention_items")
    collector = Collector(sources=(jobs.source, attention), settle_s=3600, sweep_s=3600)
    caught_up(db, collector)
    jobs.reads, attention_reads[:] = 0, []
    add_job_ends(db, 1)
    with db.session() as session:
        assert not collector.idle(session, 101.0)
        assert collector.collect(session, 101.0).events == 1
        session.commit()
    assert (jobs.reads, attention_reads) == (1, [])

"""Waking the followers of a job's live events (SSE) when it has new ones: one watcher per process.

Before, every follower read the job's events again every 0.1 s: 1,000 followers were 10,000 queries a
second, and under load an event waited for its follower's turn (p99 1.9 s in bench/engine.py).

- PostgreSQL: a trigger on ``job_events`` (migration 0015) NOTIFYs ``armillary_job_events`` with the job's
  id when the inserting transaction commits, in whichever process wrote the row (an API process or an
  ``armillary worker``); one LISTEN connection per API process wakes that job's followers.
- SQLite (one process): one query every ``POLL_S`` for the jobs with new events, while anyone follows.

Gaps no notification covers are closed by reading again: a new follower reads once more as it starts
following (a row committed after its first read and before it followed woke nobody), and every follower
reads when the LISTEN connection is (re)established (what was notified while it was down went nowhere).
A follower still reads again after ``SAFETY_S`` without a wake: anything else lost costs that long,
never an event. The followers one wake sets off read their pages together (``next_page``): one statement
for all, not one each. On PostgreSQL it runs on the event loop itself, on a connection of the watch's own
(async psycopg): a worker thread was two hand-overs of the GIL per read, and under load the read waited
longer for them than for the database. SQLite reads in a worker thread. Measured with 3 API processes and
4 workers by ``bench/engine_celery.py --sse``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import suppress
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from armillary.domain.db import Database, libpq_conninfo
from armillary.domain.errors import NotFound
from armillary.domain.jobs import TERMINAL_JOB, JobEvent
from armillary.engine.events import Pages, pages_after, pages_after_async
from armillary.engine.wakeups import Listener

log = logging.getLogger("armillary.api")

CHANNEL = "armillary_job_events"
READER_NAME = "armillary-live-events"  # PostgreSQL's application_name of a process's reading connection
_NEWEST_ID = select(func.coalesce(func.max(JobEvent.id), 0))
POLL_S = 0.05
SAFETY_S = 1.0


class JobEventWatch:
    """``follow(job_id)`` gives an ``asyncio.Event`` set whenever the job may have new events."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._followers: dict[int, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: Listener | None = None
        self._poller: asyncio.Task | None = None
        self._reads: list[tuple[int, int, int, asyncio.Future]] = []  # asked for in this turn of the loop
        self._serving: set[asyncio.Task] = set()
        self._conninfo = None if db.is_sqlite else libpq_conninfo(db.url)  # PostgreSQL: LISTEN and read there
        self._reader: Any = None  # PostgreSQL: the async connection the pages are read on
        self._reading = asyncio.Lock()  # one statement at a time on it

    def follow(self, job_id: int) -> asyncio.Event:
        """The event comes set: the follower's first read happened before it followed, and a row committed
        in between woke nobody, so its first ``wait`` returns at once and it reads again."""
        self._start()
        event = asyncio.Event()
        event.set()
        self._followers.setdefault(job_id, set()).add(event)
        return event

    def unfollow(self, job_id: int, event: asyncio.Event) -> None:
        events = self._followers.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._followers[job_id]

    async def wait(self, event: asyncio.Event) -> None:
        """Until the job may have new events, or ``SAFETY_S``; the event is cleared for the next wait."""
        with suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), SAFETY_S)
        event.clear()

    async def next_page(self, job_id: int, after: int, limit: int) -> tuple[list[dict], str | None]:
        """Up to ``limit`` of the job's events after ``after``, and its final status once it has ended (read
        before the events: an empty page with an end means every event was seen). The followers that ask in
        the same turn of the event loop (those one notification or poll woke) are read together: one worker
        thread, one session, one status query, one events query per job however many follow it."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._reads.append((job_id, after, limit, future))
        if len(self._reads) == 1:
            loop.call_soon(self._read_asked)
        return await future

    def _read_asked(self) -> None:
        asked, self._reads = self._reads, []
        task = asyncio.get_running_loop().create_task(self._serve(asked))
        self._serving.add(task)
        task.add_done_callback(self._serving.discard)

    async def _serve(self, asked: list[tuple[int, int, int, asyncio.Future]]) -> None:
        wanted: dict[int, tuple[int, int]] = {}
        for job_id, after, limit, _ in asked:
            known_after, known_limit = wanted.get(job_id, (after, limit))
            wanted[job_id] = (min(known_after, after), max(known_limit, limit))
        failure: Exception | None = None
        try:
            pages = await self._read(wanted)
        except Exception as exc:  # noqa: BLE001 - each follower fails as its own read would have
            pages, failure = {}, exc
        for job_id, after, limit, future in asked:
            if future.done():  # the follower went away meanwhile
                continue
            if failure is not None:
                future.set_exception(failure)
            elif job_id not in pages:  # purged while followed
                future.set_exception(NotFound(f"no job {job_id}"))
            else:
                events, ended = pages[job_id]
                future.set_result(([event for event in events if event["id"] > after][:limit], ended))

    async def _read(self, wanted: dict[int, tuple[int, int]]) -> dict[int, tuple[list[dict], str | None]]:
        """Each job's page, and its status once it has ended."""
        if self._conninfo is not None:
            pages = await self._read_on_loop(wanted)
        else:
            pages = await run_in_threadpool(self._read_in_thread, wanted)
        return {job_id: (events, status if status in TERMINAL_JOB else None)
                for job_id, (events, status) in pages.items()}

    def _read_in_thread(self, wanted: dict[int, tuple[int, int]]) -> Pages:
        with self.db.autocommit.connect() as conn:
            return pages_after(conn, wanted)

    async def _read_on_loop(self, wanted: dict[int, tuple[int, int]]) -> Pages:
        """PostgreSQL, on the event loop; a failed read drops the connection (the next one connects again) and
        is raised as SQLAlchemy's error (``OperationalError`` for a refused or cut connection), as a read
        through the pool would be."""
        import psycopg
        from psycopg.rows import namedtuple_row

        async with self._reading:
            try:
                if self._reader is None:
                    self._reader = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, connect_timeout=5, row_factory=namedtuple_row,
                        application_name=f"{READER_NAME}:{os.getpid()}")
                return await pages_after_async(self._reader, wanted)
            except psycopg.Error as error:
                await self._close_reader()
                raise DBAPIError.instance("reading live job events", None, error, psycopg.Error) from error

    async def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with suppress(Exception):  # already cut: nothing left to close
                await reader.close()

    async def aclose(self) -> None:
        """``stop``, and close the reading connection (on the event loop that opened it)."""
        self.stop()
        await self._close_reader()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        if self._poller is not None:
            self._poller.cancel()

    def _wake(self, job_id: int) -> None:
        for event in self._followers.get(job_id, ()):
            event.set()

    def _wake_all(self) -> None:
        """The LISTEN is (again) in place: rows committed while it was not woke nobody, so all read now."""
        for events in self._followers.values():
            for event in events:
                event.set()

    def _start(self) -> None:
        """On the first follower (in the server's event loop): LISTEN on PostgreSQL, else poll."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self._conninfo is not None:
            loop = self._loop
            self._listener = Listener(self.db.url,
                                      lambda payload: self._notified(loop, payload), channel=CHANNEL,
                                      on_listen=lambda: loop.call_soon_threadsafe(self._wake_all))
            self._listener.start()
        else:
            self._poller = self._loop.create_task(self._poll())

    def _notified(self, loop: asyncio.AbstractEventLoop, payload: str) -> None:
        """In the listener's thread, for EVERY job's events (every worker's, every process's): only a job
        followed here wakes the event loop, which would otherwise be woken ~10 times per job for nothing,
        taking the GIL from the streams it serves. A follower that starts after the check loses nothing:
        ``follow`` hands it a set event, so it reads again."""
        if payload.isdigit() and int(payload) in self._followers:  # a dict lookup: safe from this thread
            loop.call_soon_threadsafe(self._wake, int(payload))

    async def _poll(self) -> None:
        last = await asyncio.to_thread(self._newest)
        while True:
            await asyncio.sleep(POLL_S)
            if not self._followers:
                continue
            try:
                changed, last = await asyncio.to_thread(self._changed_since, last)
            except Exception:  # noqa: BLE001 - the database is busy or away: followers read at SAFETY_S
                log.warning("could not look for new job events", exc_info=True)
                continue
            if changed is None:
                self._wake_all()
            for job_id in changed or ():
                self._wake(job_id)

    def _newest(self) -> int:
        with self.db.session() as session:
            return session.scalar(_NEWEST_ID)

    def _changed_since(self, last: int) -> tuple[list[int] | None, int]:
        """The jobs with events newer than ``last`` and the newest id; None for the jobs when the newest id
        went below ``last``: the newest rows were deleted and SQLite hands their ids out again, so an id is
        no longer news by being above ``last``, and every follower reads."""
        with self.db.session() as session:  # a row committed between the two reads is reported again next time
            newest = session.scalar(_NEWEST_ID)
            if newest <= last:
                return (None if newest < last else []), newest
            rows = session.execute(select(JobEvent.job_id).where(JobEvent.id > last).group_by(JobEvent.job_id)).all()
        return [job_id for job_id, in rows], newest

"""Live events across API processes on PostgreSQL (issue 13): a follower is woken by ``NOTIFY``, not by polling.

Two apps on one PostgreSQL database, each with its own ``JobEventWatch`` (its own ``LISTEN`` connection):
``A`` runs the job engine, ``B`` serves the API only (``engine="off"``), so every event of a job started
through ``A`` is committed by ``A``, and ``B``'s follower can learn of it only through the
``armillary_job_events`` notification. The follower's own fallback read (``live_events.SAFETY_S``) is
put off to a minute: an event that arrives within the bound came by ``NOTIFY``.

* every event a job writes after its follower on ``B`` opened the stream arrives within ``BOUND_S``;
* an event committed while ``B``'s ``LISTEN`` connection is cut (its backend terminated, as a restart of
  PostgreSQL or a proxy would) reaches the follower once the listener is back, not a minute later: the
  job was started on ``B`` alone, with no engine on the database, so nothing else could wake its follower.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from armillary.api import live_events
from armillary.domain.db import Database
from armillary.domain.jobs import JobEvent
from tests.support.accounts import ADMIN, bearer, ensure_user, token_for
from tests.support.databases import postgres_database
from tests.support.jobs import act, sim_setup, wait_job
from tests.support.server import running_app

# Far above a NOTIFY's round trip (milliseconds), far below SAFETY_S (60 s here): the test machine is shared.
BOUND_S = 3.0
LISTENERS = text("SELECT pid, backend_start FROM pg_stat_activity "
                 "WHERE datname = current_database() AND query = :listen")
LISTEN = {"listen": f"LISTEN {live_events.CHANNEL}"}


@contextmanager
def apps_on_one_database(tmp_path: Path, *engines: str) -> Iterator[tuple[list[httpx.Client], Database]]:
    """An admin's client of each app (one per engine setting) on one fresh PostgreSQL database, and the database."""
    with postgres_database() as url, ExitStack() as stack:
        served = [stack.enter_context(running_app(url, tmp_path / str(n), engine=engine))
                  for n, engine in enumerate(engines)]
        db = served[0][1]
        ensure_user(db, ADMIN, admin=True)
        headers = bearer(token_for(db, ADMIN))
        yield [stack.enter_context(httpx.Client(base_url=base + "/api/v1", headers=headers, timeout=30))
               for base, _ in served], db


@pytest.fixture(autouse=True)
def no_fallback_read(monkeypatch) -> None:
    monkeypatch.setattr(live_events, "SAFETY_S", 60.0)


def listener_pids(db, timeout_s: float = 30.0) -> list[int]:
    """The backends LISTENing on the job events' channel, once there is one (B's listener connects in
    its own thread when its first follower comes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with db.engine.connect() as conn:
            pids = [pid for pid, _ in conn.execute(LISTENERS, LISTEN)]
        if pids or time.monotonic() > deadline:
            assert len(pids) == 1, f"one LISTEN connection expected (B's), found {pids}"
            return pids
        time.sleep(0.05)


def write_event(db, job_id: int, message: str) -> None:
    """A log line of the job, committed as any other process would (a worker, another API process)."""
    with db.session() as session:
        session.add(JobEvent(job_id=job_id, kind="log", message=message))
        session.commit()


def sse_events(stream: httpx.Response) -> Iterator[tuple[str, dict, float]]:
    """(kind, data, time received) of each event of an SSE stream."""
    kind = None
    for line in stream.iter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:]), time.time()


def test_a_follower_on_another_process_gets_each_event_within_the_bound(tmp_path) -> None:
    with apps_on_one_database(tmp_path, "inline", "off") as ((a, b), _):
        follow_a_stage(a, b)


def follow_a_stage(a: httpx.Client, b: httpx.Client) -> None:
    """A stage started through A (which runs it), followed on B: every event after the stream opened is on time."""
    sim_setup(a, config={"latency_ms": 300, "boot_calls": 3})  # a stage of several seconds, many events
    job = act(a, "s1", "stage").json()
    late = []
    with b.stream("GET", f"/jobs/{job['id']}/events", headers={"Accept": "text/event-stream"},
                  timeout=httpx.Timeout(30, read=20)) as stream:
        opened = time.time()
        for kind, data, received in sse_events(stream):
            if kind == "end":
                break
            written = datetime.fromisoformat(data["time"]).timestamp()
            if written > opened:
                late.append((received - written, data["message"]))
    assert wait_job(a, job["id"])["status"] == "succeeded"
    assert len(late) >= 5, f"too few events came after the stream opened to tell anything: {late}"
    slow = [(round(delay, 3), message) for delay, message in late if delay > BOUND_S]
    assert not slow, f"events that took longer than {BOUND_S} s to reach the other process: {slow}"


def test_an_event_committed_while_the_listen_connection_is_cut_arrives_once_it_is_back(tmp_path) -> None:
    with apps_on_one_database(tmp_path, "off") as ((b,), db):
        follow_through_a_cut(b, db)


def follow_through_a_cut(b: httpx.Client, db: Database) -> None:
    """B's LISTEN backend is terminated, then an event is committed: B reads it when it listens again."""
    sim_setup(b)
    job = act(b, "s1", "create").json()  # no engine runs it: nothing else wakes its follower
    with b.stream("GET", f"/jobs/{job['id']}/events", headers={"Accept": "text/event-stream"},
                  timeout=httpx.Timeout(30, read=20)) as stream:
        events = sse_events(stream)
        next(events)  # the stream is live, so B's listener starts
        old_pid = listener_pids(db)[0]
        write_event(db, job["id"], "first")
        assert next(events)[1]["message"] == "first"  # through the listener
        time.sleep(2)  # the follower reads once more, finds nothing, and waits for a wake
        with db.engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old_pid})
            conn.commit()
        write_event(db, job["id"], "written while nobody listened")
        with db.engine.connect() as conn:
            committed = conn.execute(text("SELECT clock_timestamp()")).scalar()
        sent = time.monotonic()
        for _kind, data, _received in events:
            if data.get("message") == "written while nobody listened":
                break
        waited = time.monotonic() - sent
        with db.engine.connect() as conn:
            listeners = conn.execute(LISTENERS, LISTEN).all()
    assert len(listeners) == 1 and listeners[0][0] != old_pid, (old_pid, listeners)
    assert all(started > committed for _, started in listeners), "the listener was back before the event"
    assert waited < BOUND_S + 1.0, f"the event came {waited:.1f} s later (the listener reconnects after 1 s)"


def test_a_cut_reading_connection_costs_one_read_not_the_stream(tmp_path) -> None:
    """B reads its followers' pages on a connection of its own (async, on its event loop). Terminated (a
    restart, a proxy), the read it was about to serve fails; the next wake reads on a new connection and
    the follower gets every event, in order."""
    with apps_on_one_database(tmp_path, "off") as ((b,), db):
        sim_setup(b)
        job = act(b, "s1", "create").json()
        readers = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                       "AND application_name LIKE :name")
        name = {"name": f"{live_events.READER_NAME}:%"}
        with b.stream("GET", f"/jobs/{job['id']}/events", headers={"Accept": "text/event-stream"},
                      timeout=httpx.Timeout(30, read=20)) as stream:
            events = sse_events(stream)
            next(events)
            listener_pids(db)
            write_event(db, job["id"], "first")
            assert next(events)[1]["message"] == "first"  # read on the reading connection
            with db.engine.connect() as conn:
                (old,) = [pid for pid, in conn.execute(readers, name)]
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": old})
                conn.commit()
            write_event(db, job["id"], "second")  # its wake finds the connection cut: that read fails
            time.sleep(0.5)
            write_event(db, job["id"], "third")  # this wake reads on a new connection
            messages = [next(events)[1]["message"] for _ in range(2)]
            with db.engine.connect() as conn:
                now = [pid for pid, in conn.execute(readers, name)]
    assert messages == ["second", "third"]
    assert len(now) == 1 and now[0] != old

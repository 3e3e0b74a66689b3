"""Following a job live over Server-Sent Events, and resuming after a disconnect."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import sqlalchemy
from sqlalchemy import delete, select

from armillary.api import live_events
from armillary.domain.errors import NotFound
from armillary.domain.jobs import JobEvent
from tests.support.jobs import act, sim_setup, wait_job


def read_events(response: httpx.Response, stop_after: int | None = None) -> list[dict]:
    """Parse an SSE stream into events ({id, event, data}) until it ends or ``stop_after`` are read."""
    events, current = [], {}
    for line in response.iter_lines():
        if line == "":
            if "data" in current:
                events.append(current)
                if stop_after is not None and len(events) >= stop_after:
                    return events
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = value
    return events


def test_stream_resumes_from_last_event_id_without_gaps(api: httpx.Client, base_url: str, admin_headers: dict) -> None:
    sim_setup(api, config={"latency_ms": 150, "boot_calls": 3})
    job = act(api, "s1", "stage").json()
    url = f"{base_url}/api/v1/jobs/{job['id']}/events"
    headers = {"Accept": "text/event-stream", **admin_headers}
    with httpx.stream("GET", url, headers=headers, timeout=30) as first:
        assert first.headers["content-type"].startswith("text/event-stream")
        seen = read_events(first, stop_after=3)  # then the client goes away
    with httpx.stream("GET", url, headers={**headers, "Last-Event-ID": seen[-1]["id"]}, timeout=30) as second:
        rest = read_events(second)
    assert rest[-1]["event"] == "end" and json.loads(rest[-1]["data"])["status"] == "succeeded"
    streamed = [int(e["id"]) for e in seen + rest if "id" in e]
    done = wait_job(api, job["id"])
    stored = [e["id"] for e in api.get(f"/jobs/{job['id']}/events", params={"limit": 1000}).json()["items"]]
    assert streamed == stored  # every event once, in order, across the reconnect
    last = json.loads(rest[-2]["data"])
    assert last["kind"] == "job" and last["data"]["status"] == done["status"] == "succeeded"


def test_events_page_without_streaming(api: httpx.Client) -> None:
    sim_setup(api)
    job = wait_job(api, act(api, "s1", "create").json()["id"])
    page = api.get(f"/jobs/{job['id']}/events", params={"limit": 2}).json()
    assert len(page["items"]) == 2 and page["next"]
    following = api.get(page["next"]).json()
    assert following["items"][0]["id"] > page["items"][-1]["id"]
    assert api.get("/jobs/999999/events").status_code == 404


def test_a_follower_is_woken_by_an_event_another_process_writes(
    api: httpx.Client, base_url: str, admin_headers: dict, live_server, monkeypatch
) -> None:
    """An event row written by anyone (here a plain database session, as an `armillary worker` would) reaches
    the follower through the process's JobEventWatch — a PostgreSQL NOTIFY from the job_events trigger, or
    the one SQLite poll — not through the follower's own fallback read, which is put off to a minute here."""
    monkeypatch.setattr(live_events, "SAFETY_S", 60.0)
    sim_setup(api, config={"latency_ms": 2000})
    job = act(api, "s1", "stage").json()
    url = f"{base_url}/api/v1/jobs/{job['id']}/events"
    with httpx.stream("GET", url, headers={"Accept": "text/event-stream", **admin_headers}, timeout=15) as stream:
        lines = stream.iter_lines()
        seen = read_until(lines, lambda event: True)  # the stream is live: the job's first event
        with live_server[1].session() as session:
            session.add(JobEvent(job_id=job["id"], kind="log", message="written elsewhere"))
            session.commit()
        marker = read_until(lines, lambda event: json.loads(event["data"])["message"] == "written elsewhere")
    assert int(marker["id"]) > int(seen["id"])
    api.post(f"/jobs/{job['id']}/cancel")
    wait_job(api, job["id"])


def test_a_follower_is_woken_after_the_newest_events_were_deleted(
    api: httpx.Client, base_url: str, admin_headers: dict, live_server, monkeypatch
) -> None:
    """SQLite hands the ids of deleted newest rows out again (here another job's log lines; in the suite,
    every test empties the tables of one long-running server): the watcher must not wait for ids above the
    newest it saw before it wakes anyone."""
    monkeypatch.setattr(live_events, "SAFETY_S", 60.0)
    sim_setup(api, config={"latency_ms": 2000}, systems=("s1", "s2"))
    followed, other = act(api, "s1", "stage").json(), act(api, "s2", "stage").json()
    url = f"{base_url}/api/v1/jobs/{followed['id']}/events"
    with httpx.stream("GET", url, headers={"Accept": "text/event-stream", **admin_headers}, timeout=15) as stream:
        lines = stream.iter_lines()
        read_until(lines, lambda event: True)
        db = live_server[1]
        with db.session() as session:
            session.add_all(JobEvent(job_id=other["id"], kind="log", message=f"filler {n}") for n in range(50))
            session.commit()
        time.sleep(10 * live_events.POLL_S)  # the watcher has seen the fillers (if not, the test proves less)
        with db.session() as session:
            session.execute(delete(JobEvent).where(JobEvent.message.like("filler %")))
            session.add(JobEvent(job_id=followed["id"], kind="log", message="after the deletion"))
            session.commit()
        read_until(lines, lambda event: json.loads(event["data"])["message"] == "after the deletion")
    for job in (followed, other):
        api.post(f"/jobs/{job['id']}/cancel")
        wait_job(api, job["id"])


def test_a_stream_goes_on_after_a_read_the_database_refused(
    api: httpx.Client, base_url: str, admin_headers: dict, monkeypatch
) -> None:
    """Under load PostgreSQL refuses connections ("too many clients"): the follower's read fails, and the
    stream reads again at its next wake instead of ending mid-body (which dropped every later event)."""
    sim_setup(api, config={"latency_ms": 300})
    real = live_events.JobEventWatch._read
    refused: list[int] = []

    async def refuse_once(self, wanted):  # the stream's first read after its first page
        if not refused:
            refused.append(1)
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("sorry, too many clients already"))
        return await real(self, wanted)

    monkeypatch.setattr(live_events.JobEventWatch, "_read", refuse_once)
    job = act(api, "s1", "stage").json()
    url = f"{base_url}/api/v1/jobs/{job['id']}/events"
    with httpx.stream("GET", url, headers={"Accept": "text/event-stream", **admin_headers}, timeout=30) as stream:
        events = read_events(stream)
    assert refused
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"])["status"] == "succeeded"
    assert wait_job(api, job["id"])["status"] == "succeeded"  # nothing of it left running for the next test


def test_followers_woken_together_are_read_together(api: httpx.Client, live_server, monkeypatch) -> None:
    """The watch reads the pages its followers ask for in one turn of the event loop in one go: one read
    (one statement on PostgreSQL) for all their jobs however many follow each, each follower getting only
    what is after its own last event."""
    sim_setup(api, systems=("s1", "s2"))
    first, second = (wait_job(api, act(api, name, "create").json()["id"]) for name in ("s1", "s2"))
    db = live_server[1]
    with db.session() as session:
        ids = list(session.scalars(select(JobEvent.id).where(JobEvent.job_id == first["id"]).order_by(JobEvent.id)))
    watch = live_events.JobEventWatch(db)
    reads: list[dict] = []
    real = live_events.JobEventWatch._read

    async def counted(self, wanted):
        reads.append(dict(wanted))
        return await real(self, wanted)

    monkeypatch.setattr(live_events.JobEventWatch, "_read", counted)

    async def ask() -> list:
        try:
            return await asyncio.gather(
                watch.next_page(first["id"], 0, 500), watch.next_page(first["id"], ids[1], 500),
                watch.next_page(first["id"], ids[1], 2), watch.next_page(second["id"], 0, 500),
                watch.next_page(999999, 0, 500), return_exceptions=True)
        finally:
            await watch.aclose()

    everything, after_second, two, other, missing = asyncio.run(ask())
    assert [e["id"] for e in everything[0]] == ids and everything[1] == "succeeded"
    assert [e["id"] for e in after_second[0]] == ids[2:]
    assert [e["id"] for e in two[0]] == ids[2:4]
    assert other[0] and {e["job_id"] for e in other[0]} == {second["id"]}
    assert isinstance(missing, NotFound)
    assert reads == [{first["id"]: (0, 500), second["id"]: (0, 500), 999999: (0, 500)}]  # one read, not one per follower


def read_until(lines, wanted) -> dict:
    """The next SSE event (``{id, event, data}``) for which ``wanted(event)`` holds; a read timeout fails."""
    current: dict = {}
    for line in lines:
        if line == "":
            if "data" in current and wanted(current):
                return current
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = value
    raise AssertionError("the stream ended before the event came")

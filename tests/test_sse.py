"""Following a job live over Server-Sent Events, and resuming after a disconnect."""

from __future__ import annotations

import json

import httpx

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

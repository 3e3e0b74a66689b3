"""Cluster operations on a cron schedule (``/clusters/{ref}/schedules``), fired by the engine's schedules on
the live server: a tick starts the operation as its maker; a tick that meets a busy or cooling cluster is
skipped and recorded with the reason, never retried in the background."""

from __future__ import annotations

import time
from datetime import datetime

import httpx
from sqlalchemy import select, update

from armillary.domain.jobs import Schedule
from armillary.domain.models import utcnow
from tests.support.accounts import bearer, ensure_user, grant, token_for
from tests.support.jobs import wait_job
from tests.test_clusters import cluster, run, setup


def fire(live_server, api: httpx.Client, name: str, after: str | None) -> dict:
    """Make the schedule due now; wait until its tick is recorded (a new ``last_at``)."""
    with live_server[1].engine.begin() as conn:
        conn.execute(update(Schedule).where(Schedule.name.like(f"cluster-%-{name}")).values(next_run_at=utcnow()))
    deadline = time.monotonic() + 20
    while True:
        row = next(s for s in api.get("/clusters/web/schedules").json() if s["name"] == name)
        if row["last_at"] and row["last_at"] != after:
            return row
        assert time.monotonic() < deadline, row
        time.sleep(0.1)


def test_schedules_validate_and_list(api: httpx.Client, live_server) -> None:
    setup(api)
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 1}))
    made = api.post("/clusters/web/schedules", json={"name": "morning", "cron": "0 8 * * *",
                                                      "timezone": "Europe/Paris", "operation": "resize",
                                                      "params": {"number": 10, "strict": False}})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["operation"] == "resize" and body["params"] == {"number": 10, "strict": False}
    assert datetime.fromisoformat(body["next_run_at"]).hour in (6, 7) and body["last_outcome"] is None
    for bad, field in (({"cron": "at eight"}, "cron"), ({"timezone": "Mars/Olympus"}, "timezone"),
                       ({"params": {"number": "ten"}}, "params"), ({"operation": "explode"}, "operation"),
                       ({"operation": "update_profile", "params": {"profile": "nope"}}, "params.profile")):
        answer = api.post("/clusters/web/schedules", json={"name": "bad", "cron": "0 8 * * *", "operation": "resize",
                                                            "params": {"number": 1}, **bad})
        assert answer.status_code == 422 and answer.json()["errors"][0]["field"].startswith(field), answer.text
    assert api.post("/clusters/web/schedules", json={"name": "morning", "cron": "0 9 * * *",
                                                     "operation": "check"}).status_code == 409
    # a viewer sees the schedules but may not make one
    db = live_server[1]
    ensure_user(db, "vic")
    grant(db, "vic", "dev", "viewer")
    with httpx.Client(base_url=str(api.base_url), headers=bearer(token_for(db, "vic"))) as vic:
        assert [s["name"] for s in vic.get("/clusters/web/schedules").json()] == ["morning"]
        assert vic.post("/clusters/web/schedules", json={"name": "x", "cron": "0 8 * * *",
                                                         "operation": "check"}).status_code == 403
    # switched off and on, retimed; a bad change names its field
    off = api.patch("/clusters/web/schedules/morning", json={"enabled": False, "cron": "0 9 * * *",
                                                            "params": {"number": 4}})
    assert off.status_code == 200 and (off.json()["enabled"], off.json()["params"]) == (False, {"number": 4})
    assert datetime.fromisoformat(off.json()["next_run_at"]).hour in (7, 8)
    bad = api.patch("/clusters/web/schedules/morning", json={"params": {"number": -1, "min": "x"}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("params"), bad.text
    assert api.patch("/clusters/web/schedules/nope", json={"enabled": True}).status_code == 404
    row = next(s for s in api.get("/schedules").json()["items"] if s["name"].startswith("cluster-"))
    for refused in (api.patch(f"/schedules/{row['name']}", json={"cron": "* * * * *"}),
                    api.delete(f"/schedules/{row['name']}")):  # the cluster's own: changed under the cluster only
        assert refused.status_code == 409 and "/schedules" in refused.json()["detail"], refused.text
    assert api.delete("/clusters/web/schedules/morning").status_code == 204
    assert api.get("/clusters/web/schedules").json() == []
    assert [s for s in api.get("/schedules").json()["items"] if s["name"].startswith("cluster-")] == []


def test_a_tick_starts_the_operation_or_is_skipped(api: httpx.Client, live_server) -> None:
    setup(api, config={"latency_ms": 100})
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 1}))
    assert api.post("/clusters/web/schedules", json={"name": "grow", "cron": "0 8 * * *", "operation": "resize",
                                                     "params": {"number": 3}}).status_code == 201
    tick = fire(live_server, api, "grow", None)
    assert tick["last_outcome"] == "started", tick
    job = wait_job(api, tick["last_job_id"], timeout_s=60)
    assert job["status"] == "succeeded" and job["actor"] == "schedule:web/grow", job
    assert cluster(api)["members"] == 3
    assert datetime.fromisoformat(tick["next_run_at"]) > datetime.fromisoformat(tick["last_at"])

    # a tick that meets a running operation is skipped, with the reason, and not retried
    busy = api.post("/clusters/web/scale-out", json={"count": 2})
    assert busy.status_code == 202
    tick = fire(live_server, api, "grow", tick["last_at"])
    assert tick["last_outcome"] == "skipped" and f"busy with job {busy.json()['id']}" in tick["last_reason"], tick
    assert tick["last_job_id"] is None
    assert datetime.fromisoformat(tick["next_run_at"]) > datetime.fromisoformat(tick["last_at"])  # next tick only
    wait_job(api, busy.json()["id"], timeout_s=60)
    assert cluster(api)["members"] == 5  # the skipped resize to 3 did not run afterwards

    # ... and so is one inside a cooldown
    assert api.post("/policies", json={"name": "out", "kind": "scaling",
                                       "spec": {"direction": "out", "cooldown": 600}}).status_code == 201
    assert api.post("/clusters/web/policies", json={"policy": "out"}).status_code == 200
    run(api, api.post("/clusters/web/scale-out", json={"count": 1}))
    assert api.post("/clusters/web/schedules", json={"name": "more", "cron": "0 8 * * *",
                                                     "operation": "scale_out"}).status_code == 201
    tick = fire(live_server, api, "more", None)
    assert tick["last_outcome"] == "skipped" and "cooling down until" in tick["last_reason"], tick
    # deleting the cluster deletes its schedules, the engine's rows with them
    run(api, api.delete("/clusters/web"))
    with live_server[1].engine.begin() as conn:
        assert conn.scalars(select(Schedule.name).where(Schedule.name.like("cluster-%"))).all() == []

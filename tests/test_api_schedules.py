"""/api/v1/schedules: cron-driven bulk jobs."""

from __future__ import annotations

from datetime import datetime

import httpx

SPEC = {"action": "stage", "selector": {"labels": {"tier": "web"}}, "concurrency": 5}


def test_schedule_crud_and_next_run(api: httpx.Client) -> None:
    created = api.post("/schedules", json={"name": "nightly", "cron": "0 3 * * *", "job": SPEC})
    assert created.status_code == 201, created.text
    body = created.json()
    next_run = datetime.fromisoformat(body["next_run_at"])
    assert (next_run.hour, next_run.minute) == (3, 0) and body["job"]["action"] == "stage"
    paris = api.patch("/schedules/nightly", json={"timezone": "Europe/Paris"}).json()
    assert datetime.fromisoformat(paris["next_run_at"]).hour in (1, 2)  # 03:00 in Paris, in UTC
    assert [s["name"] for s in api.get("/schedules").json()["items"]] == ["nightly"]
    duplicate = api.post("/schedules", json={"name": "nightly", "cron": "0 3 * * *", "job": SPEC})
    assert duplicate.status_code == 409
    assert api.delete("/schedules/nightly").status_code == 204
    assert api.get("/schedules/nightly").status_code == 404


def test_bad_schedules_are_refused_naming_the_field(api: httpx.Client) -> None:
    cases = [
        ({"name": "a", "cron": "every day", "job": SPEC}, "cron"),
        ({"name": "a", "cron": "0 3 * * *", "timezone": "Mars/Olympus", "job": SPEC}, "timezone"),
        ({"name": "a", "cron": "0 3 * * *", "job": {**SPEC, "action": "explode"}}, "job.action"),
        ({"name": "a", "cron": "0 3 * * *", "job": {**SPEC, "concurrency": 0}}, "job.concurrency"),
    ]
    for body, field in cases:
        response = api.post("/schedules", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["errors"][0]["field"] == field
    assert api.get("/schedules").json()["items"] == []

"""Lifecycle actions through the API, on SQLite and PostgreSQL, with the simulated driver."""

from __future__ import annotations

import threading

import httpx

from tests.support.accounts import bearer, ensure_user, grant, token_for
from tests.support.jobs import act, act_and_wait, sim_setup, wait_job


def state(api: httpx.Client, system: str) -> str:
    return api.get(f"/systems/{system}").json()["state"]


def test_full_lifecycle(api: httpx.Client) -> None:
    sim_setup(api)
    job = act_and_wait(api, "s1", "create")
    assert job["status"] == "succeeded", job
    assert [s["status"] for s in job["steps"]] == ["succeeded", "succeeded"]
    assert job["context"]["provider_id"].startswith("sim-")
    system = api.get("/systems/s1").json()
    assert system["state"] == "created" and system["machine"]["addresses"] == job["context"]["addresses"]
    assert act_and_wait(api, "s1", "provision")["status"] == "succeeded"
    assert state(api, "s1") == "ready"
    deployed = act_and_wait(api, "s1", "deploy", params={"release": "v2"})
    assert deployed["status"] == "succeeded" and deployed["context"]["release"] == "v2"
    assert act_and_wait(api, "s1", "stop")["status"] == "succeeded"
    assert state(api, "s1") == "stopped"
    assert act_and_wait(api, "s1", "start")["status"] == "succeeded"
    assert state(api, "s1") == "ready"
    reloaded = act_and_wait(api, "s1", "reload")
    assert reloaded["status"] == "succeeded", reloaded
    assert state(api, "s1") == "ready"
    assert act_and_wait(api, "s1", "destroy")["status"] == "succeeded"
    assert state(api, "s1") == "destroyed"
    assert api.get("/systems/s1").json()["machine"]["addresses"] == []


def test_stage_is_create_then_provision(api: httpx.Client) -> None:
    sim_setup(api)
    job = act_and_wait(api, "s1", "stage")
    assert job["status"] == "succeeded"
    assert [s["name"] for s in job["steps"]] == ["prepare", "create_machine", "provision"]
    assert state(api, "s1") == "ready"


def test_clone_makes_a_new_system(api: httpx.Client) -> None:
    sim_setup(api, labels={"role": "web"})
    act_and_wait(api, "s1", "stage")
    response = act(api, "s1", "clone", hostname="s2")
    assert response.status_code == 202, response.text
    job = wait_job(api, response.json()["id"])
    assert job["status"] == "succeeded", job
    clone = api.get("/systems/s2").json()
    assert clone["state"] == "ready" and clone["labels"] == {"role": "web"}
    assert clone["machine"]["addresses"] != api.get("/systems/s1").json()["machine"]["addresses"]
    missing = act(api, "s1", "clone")
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "hostname"


def test_state_machine_refuses_with_reason(api: httpx.Client) -> None:
    sim_setup(api)
    refused = act(api, "s1", "provision")
    assert refused.status_code == 409
    assert "not been created" in refused.json()["detail"]
    act_and_wait(api, "s1", "create")
    act_and_wait(api, "s1", "destroy")
    refused = act(api, "s1", "provision")
    assert refused.status_code == 409 and "destroyed" in refused.json()["detail"]
    assert refused.json()["type"] == "urn:armillary:problem:invalid-transition"
    bad = act(api, "s1", "explode")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "action"


def test_permanent_driver_failure_fails_the_job_and_marks_error(api: httpx.Client) -> None:
    sim_setup(api, config={"fail_at": ["create"]})
    job = act_and_wait(api, "s1", "create")
    assert job["status"] == "failed"
    assert "simulated permanent failure of create" in job["error"]
    create_step = job["steps"][1]
    assert create_step["status"] == "failed" and create_step["attempts"] == 1  # permanent: not retried
    assert state(api, "s1") == "error"
    # error is recoverable: fix the hypervisor and retry the action.
    api.patch("/hypervisors/sim", json={"config": {"fail_at": None}})
    assert act_and_wait(api, "s1", "create")["status"] == "succeeded"
    assert state(api, "s1") == "created"


def test_transient_failures_are_retried_with_backoff(api: httpx.Client) -> None:
    sim_setup(api, config={"fail_first_calls": 2})
    job = act_and_wait(api, "s1", "create", )
    assert job["status"] == "succeeded", job
    step = job["steps"][1]
    assert step["attempts"] == 3
    events = api.get(f"/jobs/{job['id']}/events").json()["items"]
    retries = [e for e in events if e["data"] and e["data"].get("status") == "retrying"]
    assert [e["data"]["delay_s"] for e in retries] == [2.0, 4.0]  # exponential: base 2 s, doubled


def test_idempotency_key_returns_the_same_job(api: httpx.Client) -> None:
    sim_setup(api)
    headers = {"Idempotency-Key": "create-s1-once"}
    first = api.post("/systems/s1/actions", json={"action": "create"}, headers=headers)
    second = api.post("/systems/s1/actions", json={"action": "create"}, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    wait_job(api, first.json()["id"])
    assert len(api.get("/jobs", params={"system": first.json()["system_id"]}).json()["items"]) == 1
    reused = api.post("/systems/s1/actions", json={"action": "destroy"}, headers=headers)
    assert reused.status_code == 409 and "already used" in reused.json()["detail"]


def test_second_action_on_a_busy_system_is_refused_naming_the_job(api: httpx.Client) -> None:
    sim_setup(api, config={"latency_ms": 400})
    first = act(api, "s1", "create").json()
    refused = act(api, "s1", "destroy")
    assert refused.status_code == 409
    assert refused.json()["holder_job_id"] == first["id"] and f"job {first['id']}" in refused.json()["detail"]
    queued = api.post("/systems/s1/actions", params={"queue": "true"}, json={"action": "destroy"})
    assert queued.status_code == 202 and queued.json()["waiting_for_lock"] is True
    assert wait_job(api, first["id"])["status"] == "succeeded"
    assert wait_job(api, queued.json()["id"])["status"] == "succeeded"
    assert state(api, "s1") == "destroyed"


def test_twenty_concurrent_conflicting_actions_run_exactly_one(
    api: httpx.Client, base_url: str, admin_headers: dict
) -> None:
    sim_setup(api, config={"latency_ms": 300})
    results: list[httpx.Response] = []
    barrier = threading.Barrier(20)

    def fire() -> None:
        with httpx.Client(base_url=base_url + "/api/v1", timeout=30, headers=admin_headers) as client:
            barrier.wait()
            results.append(client.post("/systems/s1/actions", json={"action": "create"}))

    threads = [threading.Thread(target=fire) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes.count(202) == 1 and codes.count(409) == 19, codes
    winner = next(r.json() for r in results if r.status_code == 202)
    assert wait_job(api, winner["id"])["status"] == "succeeded"
    assert len(api.get("/jobs").json()["items"]) == 1


def test_locked_environment_refuses_actions_except_from_admins(api: httpx.Client, live_server) -> None:
    sim_setup(api)
    started = api.get("/audit", params={"limit": 1}).json()["items"][0]["at"]  # the trail outlives tests
    db = live_server[1]
    ensure_user(db, "olga")
    grant(db, "olga", "dev", "operator")
    with httpx.Client(base_url=str(api.base_url), headers=bearer(token_for(db, "olga")), timeout=30) as olga:
        locked = olga.post("/environments/dev/lock", json={"reason": "change freeze"})
        assert locked.status_code == 200 and locked.json()["locked_by"] == "olga"
        refused = act(olga, "s1", "create")
        body = refused.json()
        assert refused.status_code == 409 and body["type"].endswith(":environment-locked")
        assert "change freeze" in body["detail"] and "olga" in body["detail"] and body["locked_by"] == "olga"
        assert olga.patch("/systems/s1", json={"labels": {"a": "b"}}).status_code == 409
        assert api.get("/jobs").json()["items"] == []
        # An admin passes the lock (an emergency fix); the operator who locked it can lift it.
        assert act_and_wait(api, "s1", "create")["status"] == "succeeded"
        assert olga.post("/environments/dev/unlock").json()["locked"] is False
    trail = api.get("/audit", params={"resource_type": "environments", "user": "olga", "since": started}).json()["items"]
    assert {row["action"] for row in trail} == {"environment.lock", "environment.unlock"}
    assert any(row["detail"].get("lock_reason") == "change freeze" for row in trail)


def test_cancel_stops_at_step_boundary_and_compensates(api: httpx.Client) -> None:
    sim_setup(api, config={"latency_ms": 600})
    job = act(api, "s1", "stage").json()
    # Wait until create_machine runs, then cancel: it finishes, provision never starts, the machine is undone.
    for _ in range(100):
        current = api.get(f"/jobs/{job['id']}").json()
        if current["steps"][1]["status"] == "running":
            break
        import time

        time.sleep(0.05)
    assert api.post(f"/jobs/{job['id']}/cancel").status_code == 202
    done = wait_job(api, job["id"])
    assert done["status"] == "cancelled"
    statuses = {s["name"]: s["status"] for s in done["steps"]}
    assert statuses["create_machine"] == "succeeded" and statuses["provision"] == "cancelled"
    messages = [e["message"] for e in api.get(f"/jobs/{job['id']}/events").json()["items"]]
    assert "compensating create_machine" in messages
    system = api.get("/systems/s1").json()
    assert system["state"] == "defined" and system["machine"]["addresses"] == []
    again = api.post(f"/jobs/{job['id']}/cancel")
    assert again.status_code == 409


def test_bulk_job_runs_on_every_match_in_batches(api: httpx.Client) -> None:
    sim_setup(api, systems=("b1", "b2", "b3", "b4", "b5"), labels={"cell": "c1"})
    api.post("/systems", json={"hostname": "other", "environment": "dev", "hypervisor": "sim"})
    response = api.post("/jobs", json={"action": "create", "selector": {"labels": {"cell": "c1"}},
                                       "concurrency": 2, "batch_size": 2})
    assert response.status_code == 202, response.text
    parent = wait_job(api, response.json()["id"])
    assert parent["status"] == "succeeded", parent
    assert [s["name"] for s in parent["steps"]] == ["batch-1", "batch-2", "batch-3"]
    hosts = {h for k, batch in parent["context"].items() if k.startswith("batch_") for h in batch}
    assert hosts == {"b1", "b2", "b3", "b4", "b5"}
    children = api.get("/jobs", params={"parent": parent["id"]}).json()["items"]
    assert len(children) == 5 and {c["status"] for c in children} == {"succeeded"}
    assert state(api, "other") == "defined"
    none = api.post("/jobs", json={"action": "create", "selector": {"labels": {"cell": "nope"}}})
    assert none.status_code == 422 and none.json()["errors"][0]["field"] == "selector"


def test_bulk_job_stops_or_continues_on_failure(api: httpx.Client) -> None:
    sim_setup(api, systems=("b1", "b2", "b3", "b4"), labels={"cell": "c1"})
    act_and_wait(api, "b1", "create")  # b1 cannot be created again: it will fail in batch 1
    stop = wait_job(api, api.post("/jobs", json={"action": "create", "selector": {"labels": {"cell": "c1"}},
                                                 "batch_size": 2}).json()["id"])
    assert stop["status"] == "failed" and "b1" in stop["error"]
    assert stop["summary"]["hosts"] == {"b1": "failed", "b2": "succeeded"}  # the failing batch's hosts are kept
    assert [s["status"] for s in stop["steps"]] == ["failed", "cancelled"]
    assert state(api, "b3") == "defined"  # batch 2 never ran
    cont = wait_job(api, api.post("/jobs", json={"action": "create", "selector": {"labels": {"cell": "c1"}},
                                                 "batch_size": 2, "on_failure": "continue"}).json()["id"])
    assert cont["status"] == "succeeded"
    results = {h: r["status"] for k, b in cont["context"].items() if k.startswith("batch_") for h, r in b.items()}
    assert results == {"b1": "failed", "b2": "failed", "b3": "succeeded", "b4": "succeeded"}
    assert cont["summary"] == {"hosts": results, "succeeded": 2, "failed": 2}

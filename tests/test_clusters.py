"""Clusters over HTTP on the simulated driver, on SQLite and PostgreSQL: operations as jobs with child
jobs, one operation at a time, capacity and policies, quotas before any member is made, receivers."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime

import httpx
from sqlalchemy import delete

from armillary.domain.jobs import SimulatedMachine
from tests.support.accounts import bearer, ensure_user, grant, token_for
from tests.support.jobs import run, wait_job


def setup(api: httpx.Client, config: dict | None = None, cpu: int = 1) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                          "config": config or {}})
    assert made.status_code == 201, made.text
    made = api.post("/profiles", json={"name": "web", "environment": "dev", "hypervisor": "sim",
                                       "machine": {"cpu": cpu, "memory": "1G"}, "labels": {"tier": "web"}})
    assert made.status_code == 201, made.text



def cluster(api: httpx.Client, name: str = "web") -> dict:
    return api.get(f"/clusters/{name}").json()


def test_create_scale_resize_and_delete(api: httpx.Client) -> None:
    setup(api)
    job = run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 3, "min": 1}))
    assert job["action"] == "cluster-create" and job["summary"]["succeeded"] == 3
    body = cluster(api)
    assert (body["members"], body["active_members"], body["desired"], body["status"]) == (3, 3, 3, "active")
    members = api.get("/clusters/web/members").json()
    assert [m["hostname"] for m in members] == ["web-001", "web-002", "web-003"]
    # members are ordinary systems, labelled with their cluster and the profile's labels
    systems = api.get("/systems", params={"label": "cluster=web"}).json()["items"]
    assert len(systems) == 3 and all(s["labels"]["tier"] == "web" and s["state"] == "created" for s in systems)
    # every member's create was a child job of the operation
    children = [j for j in api.get("/jobs", params={"limit": 100}).json()["items"] if j["parent_id"] == job["id"]]
    assert len(children) == 3 and {c["action"] for c in children} == {"create"}

    run(api, api.post("/clusters/web/scale-out", json={"count": 2}))
    assert cluster(api)["members"] == 5
    run(api, api.post("/clusters/web/resize", json={"adjustment_type": "percent", "number": -30}))
    assert cluster(api)["members"] == 4  # -1.5 → -1
    # scale-in takes the youngest by default; destroyed members' records go
    run(api, api.post("/clusters/web/scale-in", json={"count": 2}))
    assert [m["hostname"] for m in api.get("/clusters/web/members").json()] == ["web-001", "web-002"]
    assert len(api.get("/systems", params={"label": "cluster=web"}).json()["items"]) == 2

    # strict bounds name the bound; best effort clamps
    refused = api.post("/clusters/web/scale-in", json={"count": 5})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "min", refused.text
    run(api, api.post("/clusters/web/scale-in", json={"count": 5, "best_effort": True}))
    assert cluster(api)["members"] == 1
    refused = api.post("/clusters/web/resize", json={"min": 3, "max": 2})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "max"

    # a profile in use can't be deleted
    in_use = api.delete("/profiles/web")
    assert in_use.status_code == 409 and "web" in in_use.json()["detail"]
    run(api, api.delete("/clusters/web"))
    assert api.get("/clusters/web").status_code == 404
    assert api.get("/systems", params={"label": "cluster=web"}).json()["items"] == []
    assert api.delete("/profiles/web").status_code == 204


def test_one_operation_at_a_time_and_cooldown(api: httpx.Client) -> None:
    setup(api, config={"latency_ms": 300})
    first = api.post("/clusters", json={"name": "web", "profile": "web", "desired": 2})
    assert first.status_code == 202
    busy = api.post("/clusters/web/scale-out", json={"count": 1})
    assert busy.status_code == 409, busy.text
    assert busy.json()["type"].endswith(":cluster-busy") and str(first.json()["id"]) in busy.json()["detail"]
    assert cluster(api)["status"] == "resizing" and cluster(api)["running_job_id"] == first.json()["id"]
    wait_job(api, first.json()["id"], timeout_s=60)
    # a scaling policy: cooldown measured from the end of the last scale-out, stored in the database
    policy = api.post("/policies", json={"name": "out2", "kind": "scaling",
                                         "spec": {"direction": "out", "number": 2, "cooldown": 600}})
    assert policy.status_code == 201, policy.text
    assert api.post("/clusters/web/policies", json={"policy": "out2"}).status_code == 200
    run(api, api.post("/clusters/web/scale-out", json={}))  # the policy's adjustment: +2
    assert cluster(api)["members"] == 4
    cooling = api.post("/clusters/web/scale-out", json={"count": 1})
    assert cooling.status_code == 409 and cooling.json()["type"].endswith(":cooling-down"), cooling.text
    assert "cooling down until" in cooling.json()["detail"]
    assert cluster(api)["policies"][0]["cooldown_until"]


def test_deletion_policy_check_and_recover(api: httpx.Client, live_server) -> None:
    setup(api)
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 4}))
    # a machine vanishes behind Armillary's back; check finds it, recover recreates it
    victim = api.get("/clusters/web/members").json()[1]
    with live_server[1].engine.begin() as conn:
        conn.execute(delete(SimulatedMachine).where(SimulatedMachine.system_id == victim["system_id"]))
    run(api, api.post("/clusters/web/check"))
    body = cluster(api)
    assert body["status"] == "warning" and body["active_members"] == 3, body
    # scale-in takes failed members first, whatever the criteria
    assert api.post("/policies", json={"name": "old", "kind": "deletion",
                                       "spec": {"criteria": "oldest_first"}}).status_code == 201
    assert api.post("/clusters/web/policies", json={"policy": "old"}).status_code == 200
    run(api, api.post("/clusters/web/scale-in", json={"count": 2}))
    assert [m["hostname"] for m in api.get("/clusters/web/members").json()] == ["web-003", "web-004"]
    victim = api.get("/clusters/web/members").json()[0]
    with live_server[1].engine.begin() as conn:
        conn.execute(delete(SimulatedMachine).where(SimulatedMachine.system_id == victim["system_id"]))
    run(api, api.post("/clusters/web/check"))
    run(api, api.post("/clusters/web/recover"))
    body = cluster(api)
    assert body["status"] == "active" and body["active_members"] == 2, body


def test_quota_refuses_the_whole_scale_out_before_any_member(api: httpx.Client, live_server) -> None:
    setup(api, cpu=2)
    db = live_server[1]
    ensure_user(db, "uma")
    grant(db, "uma", "dev", "user", max_systems=10, max_cpu=6)
    with httpx.Client(base_url=str(api.base_url), headers=bearer(token_for(db, "uma"))) as uma:
        run(uma, uma.post("/clusters", json={"name": "web", "profile": "web", "desired": 2}))
        refused = uma.post("/clusters/web/scale-out", json={"count": 2})
        assert refused.status_code == 403, refused.text
        problem = refused.json()
        assert problem["type"].endswith(":quota-exceeded") and problem["limit"] == "cpu" and problem["quota"] == 6
        assert "nothing was created" in problem["detail"]
        assert len(uma.get("/systems").json()["items"]) == 2  # no member record was made
        run(uma, uma.post("/clusters/web/scale-out", json={"count": 1}))
    # a viewer sees the cluster but may not scale it; another environment does not see it at all
    ensure_user(db, "vic")
    grant(db, "vic", "dev", "viewer")
    with httpx.Client(base_url=str(api.base_url), headers=bearer(token_for(db, "vic"))) as vic:
        assert vic.get("/clusters/web").status_code == 200
        assert vic.post("/clusters/web/scale-out", json={"count": 1}).status_code == 403
    ensure_user(db, "olga")
    with httpx.Client(base_url=str(api.base_url), headers=bearer(token_for(db, "olga"))) as olga:
        assert olga.get("/clusters/web").status_code == 404


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_receivers_sign_rate_limit_and_alertmanager(api: httpx.Client, base_url: str) -> None:
    setup(api)
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 1}))
    made = api.post("/receivers", json={"name": "grow", "cluster": "web", "operation": "scale_out",
                                        "params": {"count": 1}, "rate_limit": 2})
    assert made.status_code == 201, made.text
    secret, url = made.json()["secret"], made.json()["url"]
    assert secret and url.startswith(base_url) and "/receivers/hooks/" in url
    assert api.get("/receivers/grow").json()["secret"] is None  # shown once
    bad = api.post("/receivers", json={"name": "bad", "cluster": "web", "operation": "scale_out",
                                       "params": {"count": 0}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("params")

    with httpx.Client(timeout=30) as anonymous:
        body = b'{"reason": "load"}'
        assert anonymous.post(url, content=body, headers={"X-Armillary-Signature": sign("wrong", body)}
                              ).status_code == 401
        assert anonymous.post(url + "x", content=body, headers={"X-Armillary-Signature": sign(secret, body)}
                              ).status_code == 401
        job = run(api, anonymous.post(url, content=body, headers={"X-Armillary-Signature": sign(secret, body)}))
        assert job["actor"] == "receiver:grow"
        assert cluster(api)["members"] == 2
        # Alertmanager's format with the secret as a bearer token: resolved does nothing here
        resolved = json.dumps({"version": "4", "status": "resolved", "alerts": [{"status": "resolved"}]})
        answer = anonymous.post(url, content=resolved, headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 200 and "nothing to do" in answer.json()["detail"]
        limited = anonymous.post(url, content=body, headers={"Authorization": f"Bearer {secret}"})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        # a rotated secret: the old one stops working at once
        rotated = api.post("/receivers/grow/rotate").json()["secret"]
        assert rotated != secret
        assert anonymous.post(url, content=body, headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_health_policy_recovers_a_vanished_member(api: httpx.Client, live_server) -> None:
    setup(api)
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 2}))
    assert api.post("/policies", json={"name": "heal", "kind": "health",
                                       "spec": {"interval": 1, "grace": 1}}).status_code == 201
    assert api.post("/clusters/web/policies", json={"policy": "heal"}).status_code == 200
    victim = api.get("/clusters/web/members").json()[0]
    with live_server[1].engine.begin() as conn:  # the machine vanishes behind Armillary's back
        conn.execute(delete(SimulatedMachine).where(SimulatedMachine.system_id == victim["system_id"]))

    def recovered() -> bool:
        jobs = api.get("/jobs", params={"limit": 50}).json()["items"]
        done = [j for j in jobs if j["action"] == "cluster-recover" and j["status"] == "succeeded"]
        return bool(done) and done[0]["actor"] == "health:web" and cluster(api)["active_members"] == 2

    deadline = time.monotonic() + 30
    while not recovered():
        assert time.monotonic() < deadline, api.get("/clusters/web/members").json()
        time.sleep(0.2)
    # detaching the policy ends its watch
    assert api.delete("/clusters/web/policies/heal").status_code == 204
    watch = next(j for j in api.get("/jobs", params={"limit": 50}).json()["items"] if j["action"] == "cluster-health")
    assert wait_job(api, watch["id"], timeout_s=10)["context"]["health"] == "the policy was detached"


def test_adopt_and_remove_members(api: httpx.Client, live_server) -> None:
    setup(api)
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 1}))
    for name in ("old1", "old2"):
        assert api.post("/systems", json={"hostname": name, "environment": "dev", "hypervisor": "sim"}
                        ).status_code == 201
    run(api, api.post("/clusters/web/members", json={"systems": ["old1", "old2"]}))
    body = cluster(api)
    assert (body["members"], body["desired"]) == (3, 3)
    assert api.get("/systems/old1").json()["labels"]["cluster"] == "web"
    # a user may not adopt a system they don't own (a scale-in could destroy it)
    db = live_server[1]
    ensure_user(db, "uma")
    grant(db, "uma", "dev", "user")
    assert api.post("/systems", json={"hostname": "other", "environment": "dev", "hypervisor": "sim"}).status_code == 201
    with httpx.Client(base_url=str(api.base_url), headers=bearer(token_for(db, "uma"))) as uma:
        run(uma, uma.post("/clusters", json={"name": "mine", "profile": "web"}))
        assert uma.post("/clusters/mine/members", json={"systems": ["other"]}).status_code == 403
    # removed and kept: a plain system again, without the label
    run(api, api.post("/clusters/web/members/remove", json={"systems": ["old1"], "destroy": False}))
    assert "cluster" not in api.get("/systems/old1").json()["labels"]
    assert [m["hostname"] for m in api.get("/clusters/web/members").json()] == ["web-001", "old2"]
    refused = api.post("/clusters/web/members", json={"systems": ["old2"]})
    assert refused.status_code == 422 and "already a member" in refused.text


def test_failed_members_fail_the_job_by_name_and_go_first(api: httpx.Client) -> None:
    setup(api, config={"fail_at": ["create"]})
    job = run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 2, "min": 1}), "failed")
    assert "web-001" in job["error"] and "web-002" in job["error"]
    assert job["summary"]["failed"] == 2 and set(job["summary"]["hosts"]) == {"web-001", "web-002"}
    body = cluster(api)
    assert (body["status"], body["members"], body["active_members"], body["running_job_id"]) == ("error", 2, 0, None)
    run(api, api.post("/clusters/web/resize", json={"number": 0, "min": 0}))  # failed members destroyed, forgotten
    assert (cluster(api)["members"], cluster(api)["status"]) == (0, "active")


def test_deletion_grace_period_holds_the_destroys(api: httpx.Client) -> None:
    setup(api)
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 3}))
    assert api.post("/policies", json={"name": "drain", "kind": "deletion",
                                       "spec": {"criteria": "oldest_first", "grace_period": 2}}).status_code == 201
    assert api.post("/clusters/web/policies", json={"policy": "drain"}).status_code == 200
    started = api.post("/clusters/web/scale-in", json={"count": 1})
    assert started.status_code == 202, started.text
    # during the grace period the chosen member still runs, and the cluster is held by the operation
    assert api.get("/systems/web-001").json()["state"] == "created"
    assert api.post("/clusters/web/scale-out", json={"count": 1}).status_code == 409
    job = wait_job(api, started.json()["id"], timeout_s=60)
    assert job["status"] == "succeeded", job
    child = next(j for j in api.get("/jobs", params={"limit": 100}).json()["items"]
                 if j["parent_id"] == job["id"] and j["action"] == "destroy")
    held = datetime.fromisoformat(child["created_at"]) - datetime.fromisoformat(job["created_at"])
    assert held.total_seconds() >= 2, held
    assert [m["hostname"] for m in api.get("/clusters/web/members").json()] == ["web-002", "web-003"]

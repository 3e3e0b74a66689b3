"""Rolling profile updates (``POST /clusters/{ref}/update-profile``) and recovery by reboot, on the
simulated driver over HTTP (SQLite and PostgreSQL): batches, min_in_service, create-first vs destroy-first
at the quota, a failing batch stopping the rollout, one operation at a time."""

from __future__ import annotations

import time

import httpx
from sqlalchemy import delete, select, update

from armillary.clusters import rolling
from armillary.domain.jobs import SimulatedMachine
from tests.support.accounts import bearer, ensure_user, grant, token_for
from tests.support.jobs import wait_job
from tests.test_clusters import cluster, run, setup


def children(api: httpx.Client, job_id: int) -> list[dict]:
    jobs = api.get("/jobs", params={"limit": 200}).json()["items"]
    return sorted((j for j in jobs if j["parent_id"] == job_id), key=lambda j: j["id"])


def revisions(api: httpx.Client) -> list[tuple[str, str | None, int]]:
    return [(m["hostname"], m["profile"], m["profile_revision"]) for m in api.get("/clusters/web/members").json()]


def test_batches_rule() -> None:
    members = [rolling.Outdated(i, i, healthy=i != 3) for i in range(1, 6)]
    # failed members first, then by index; create-first takes max_batch_size at once
    assert rolling.batches(members, 4, max_batch_size=2, min_in_service=3, surge_fits=True) == (
        "create_first", [[3, 1], [2, 4], [5]])
    # destroy-first: each batch at most active - min_in_service
    assert rolling.batches(members, 4, max_batch_size=3, min_in_service=2, surge_fits=False) == (
        "destroy_first", [[3, 1], [2, 4], [5]])
    for active, minimum, surge in ((4, 5, True), (4, 4, False)):
        try:
            rolling.batches(members, active, max_batch_size=1, min_in_service=minimum, surge_fits=surge)
        except rolling.RolloutRefused as exc:
            assert exc.field == "min_in_service"
        else:
            raise AssertionError("refused expected")
    assert rolling.batches([], 0, max_batch_size=1, min_in_service=0, surge_fits=False) == ("create_first", [])


def test_rolling_update_create_first(api: httpx.Client) -> None:
    setup(api, config={"latency_ms": 20})
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 3, "min": 1}))
    changed = api.patch("/profiles/web", json={"labels": {"tier": "web", "release": "2"}})
    assert changed.status_code == 200 and changed.json()["revision"] == 2
    stale = api.post("/clusters/web/update-profile", json={"version": 1})
    assert stale.status_code == 409 and "revision 2" in stale.json()["detail"], stale.text
    too_many = api.post("/clusters/web/update-profile", json={"min_in_service": 4})
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["field"] == "min_in_service"

    started = api.post("/clusters/web/update-profile",
                       json={"version": 2, "max_batch_size": 2, "min_in_service": 3, "pause_seconds": 1})
    assert started.status_code == 202, started.text
    busy = api.post("/clusters/web/scale-out", json={"count": 1})  # one operation at a time
    assert busy.status_code == 409 and str(started.json()["id"]) in busy.json()["detail"]
    job = wait_job(api, started.json()["id"], timeout_s=60)
    assert job["status"] == "succeeded", job
    assert job["action"] == "cluster-update-profile" and job["context"]["rollout"]["mode"] == "create_first"
    assert job["context"]["rollout"]["batches"] == 2 and job["summary"]["succeeded"] == 6
    # create-first, batch after batch: 2 creates, 2 destroys, then 1 create, 1 destroy
    kids = children(api, job["id"])
    assert [k["action"] for k in kids] == ["create", "create", "destroy", "destroy", "create", "destroy"]
    assert all(k["status"] == "succeeded" for k in kids)
    # capacity never dropped below min_in_service: the destroys of a batch began after its creates ended
    assert kids[2]["created_at"] >= max(kids[0]["finished_at"], kids[1]["finished_at"])
    assert revisions(api) == [("web-004", "web", 2), ("web-005", "web", 2), ("web-006", "web", 2)]
    body = cluster(api)
    assert (body["status"], body["members"], body["active_members"]) == ("active", 3, 3)
    # up to date: nothing to replace, the job still says so
    again = run(api, api.post("/clusters/web/update-profile", json={}))
    assert children(api, again["id"]) == [] and again["context"]["rollout"]["batches"] == 0


def test_rolling_update_at_the_quota_destroys_first(api: httpx.Client, live_server) -> None:
    setup(api)
    db = live_server[1]
    ensure_user(db, "uma")
    grant(db, "uma", "dev", "user", max_systems=3)
    with httpx.Client(base_url=str(api.base_url), headers=bearer(token_for(db, "uma"))) as uma:
        run(uma, uma.post("/clusters", json={"name": "web", "profile": "web", "desired": 3}))
        assert api.patch("/profiles/web", json={"variables": {"v": 2}}).json()["revision"] == 2
        # no room for one extra member: destroy first, one at a time above min_in_service 2
        job = run(uma, uma.post("/clusters/web/update-profile", json={"max_batch_size": 3, "min_in_service": 2}))
        assert job["context"]["rollout"]["mode"] == "destroy_first" and job["context"]["rollout"]["batches"] == 3
        assert [k["action"] for k in children(api, job["id"])] == ["destroy", "create"] * 3
        assert [r[2] for r in revisions(uma)] == [2, 2, 2]
        # no room above min_in_service at all: refused before anything happens
        assert api.patch("/profiles/web", json={"variables": {"v": 3}}).json()["revision"] == 3
        refused = uma.post("/clusters/web/update-profile", json={"min_in_service": 3})
        assert refused.status_code == 422 and "destroy-first" in refused.json()["errors"][0]["message"]


def test_a_failing_batch_stops_the_rollout(api: httpx.Client) -> None:
    setup(api)
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 3}))
    assert api.post("/hypervisors", json={"name": "bad", "environment": "dev", "driver": "simulated",
                                          "config": {"fail_at": ["create"]}}).status_code == 201
    assert api.post("/profiles", json={"name": "web2", "environment": "dev", "hypervisor": "bad"}).status_code == 201
    job = run(api, api.post("/clusters/web/update-profile", json={"profile": "web2"}), "failed")
    assert "batch 1 of 3" in job["error"] and job["context"]["rollout"]["done"] == 0, job
    # the old members are untouched; the failed new one is there, recorded with its profile
    assert revisions(api) == [("web-001", "web", 1), ("web-002", "web", 1), ("web-003", "web", 1),
                              ("web-004", "web2", 1)]
    body = cluster(api)
    assert body["status"] == "warning" and "update-profile stopped" in body["status_reason"], body
    assert body["profile"]["name"] == "web2" and body["running_job_id"] is None


def test_recover_by_reboot_keeps_the_machine(api: httpx.Client, live_server) -> None:
    setup(api)
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 2}))
    victim = api.get("/clusters/web/members").json()[0]
    with live_server[1].engine.begin() as conn:
        machine = conn.scalar(select(SimulatedMachine.id).where(SimulatedMachine.system_id == victim["system_id"]))
    with live_server[1].engine.begin() as conn:  # the machine stops behind Armillary's back
        conn.execute(update(SimulatedMachine).where(SimulatedMachine.system_id == victim["system_id"])
                     .values(state="stopped"))
    run(api, api.post("/clusters/web/check"))
    assert cluster(api)["status"] == "warning"
    job = run(api, api.post("/clusters/web/recover", json={"action": "reboot"}))
    assert [k["action"] for k in children(api, job["id"])] == ["reboot"]
    assert api.get(f"/systems/{victim['system_id']}").json()["state"] == "created"
    with live_server[1].engine.begin() as conn:  # the same machine, running again
        assert conn.execute(select(SimulatedMachine.id, SimulatedMachine.state)
                            .where(SimulatedMachine.system_id == victim["system_id"])).one() == (machine, "running")
    assert cluster(api)["status"] == "active"
    # a machine that is gone cannot be rebooted: the member stays failed, the job says to recreate
    with live_server[1].engine.begin() as conn:
        conn.execute(delete(SimulatedMachine).where(SimulatedMachine.system_id == victim["system_id"]))
    run(api, api.post("/clusters/web/check"))
    failed = run(api, api.post("/clusters/web/recover", json={"action": "reboot"}), "failed")
    assert "recreate" in failed["error"], failed


def test_health_policy_recovers_by_reboot(api: httpx.Client, live_server) -> None:
    setup(api)
    run(api, api.post("/clusters", json={"name": "web", "profile": "web", "desired": 2}))
    assert api.post("/policies", json={"name": "heal", "kind": "health",
                                       "spec": {"interval": 1, "grace": 1, "recovery": "reboot"}}).status_code == 201
    victim = api.get("/clusters/web/members").json()[1]
    with live_server[1].engine.begin() as conn:  # stopped behind Armillary's back
        machine = conn.scalar(select(SimulatedMachine.id).where(SimulatedMachine.system_id == victim["system_id"]))
        conn.execute(update(SimulatedMachine).where(SimulatedMachine.id == machine).values(state="stopped"))
    assert api.post("/clusters/web/policies", json={"policy": "heal"}).status_code == 200

    def recovered() -> dict | None:
        jobs = api.get("/jobs", params={"limit": 50}).json()["items"]
        done = [j for j in jobs if j["action"] == "cluster-recover" and j["status"] == "succeeded"]
        return done[0] if done and cluster(api)["active_members"] == 2 else None

    deadline = time.monotonic() + 30
    while not (job := recovered()):
        assert time.monotonic() < deadline, api.get("/clusters/web/members").json()
        time.sleep(0.2)
    assert job["actor"] == "health:web" and [k["action"] for k in children(api, job["id"])] == ["reboot"]
    with live_server[1].engine.begin() as conn:  # the same machine, running again
        assert conn.execute(select(SimulatedMachine.id, SimulatedMachine.state)
                            .where(SimulatedMachine.system_id == victim["system_id"])).one() == (machine, "running")
    assert api.delete("/clusters/web/policies/heal").status_code == 204

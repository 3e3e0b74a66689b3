"""Audits and remediation through the API, on SQLite and PostgreSQL, with machines reached by the local
transport (``tests/support/audits.py``: the simulated driver with ``transport = "local"``; each system's
"config file" is a file of this test's directory named by its ``conf`` variable). The same scenarios
against real machines over SSH and Ansible: ``tests/test_audits_ssh.py``."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from armillary.domain.accounts import AuditEvent
from tests.support.accounts import bearer, ensure_user, grant, token_for
from tests.support.audits import register_local_simulated, run_audit, statuses, wait_run
from tests.support.jobs import act_and_wait, wait_job

HOSTS = ("h1", "h2", "h3", "h4", "h5")
# The fix: refuses where the system's variable says so (a fix that errors), does nothing where another says so
# (a fix that runs but does not repair), else writes the good line.
FIX = """
if [ "${broken_fix:-}" = true ]; then echo "cannot write $conf: disk full" >&2; exit 3; fi
if [ "${noop_fix:-}" = true ]; then exit 0; fi
echo mode=good > "$conf"
"""


@pytest.fixture(autouse=True, scope="module")
def _driver() -> None:
    register_local_simulated()


def conf(tmp_path: Path, host: str) -> Path:
    return tmp_path / f"{host}.conf"


def write(tmp_path: Path, host: str, mode: str) -> None:
    conf(tmp_path, host).write_text(f"mode={mode}\n")


def fleet(api: httpx.Client, tmp_path: Path, env: str = "dev", hosts=HOSTS, **env_fields) -> None:
    """An environment with a simulated-local hypervisor and created systems labelled role=web."""
    assert api.post("/environments", json={"name": env, **env_fields}).status_code == 201
    made = api.post("/hypervisors", json={"name": f"loc-{env}", "environment": env, "driver": "simulated-local"})
    assert made.status_code == 201, made.text
    for host in hosts:
        made = api.post("/systems", json={"hostname": host, "environment": env, "hypervisor": f"loc-{env}",
                                          "labels": {"role": "web"}, "variables": {"conf": str(conf(tmp_path, host))}})
        assert made.status_code == 201, made.text
        assert act_and_wait(api, host, "create")["status"] == "succeeded"
        write(tmp_path, host, "good")


def define(api: httpx.Client, selector: dict | None = None, **fix) -> None:
    check = api.post("/checks", json={
        "name": "conf-good", "kind": "command", "severity": "high", "tags": ["config"],
        "description": "the config file says mode=good",
        "spec": {"command": 'grep -x "mode=.*" "$conf"', "expect_pattern": "^mode=good$"}})
    assert check.status_code == 201, check.text
    drift = api.post("/checks", json={"name": "machine", "kind": "machine_drift"})
    assert drift.status_code == 201, drift.text
    audit = api.post("/audits", json={"name": "web", "selector": selector or {"labels": {"role": "web"}},
                                      "checks": ["conf-good", "machine"], "batch_size": 2, "concurrency": 2})
    assert audit.status_code == 201, audit.text
    fix_body = {"name": "conf-fix", "check": "conf-good", "kind": "script", "spec": {"script": FIX}, **fix}
    assert api.post("/remediations", json=fix_body).status_code == 201


def latest_of(api: httpx.Client, run_id: int, check: str = "conf-good") -> dict[str, str]:
    return statuses(api.get("/findings", params={"run": run_id, "check": check}).json()["items"])


def test_runs_record_findings_with_history_summary_and_compliance(api: httpx.Client, tmp_path: Path) -> None:
    fleet(api, tmp_path)
    define(api)
    write(tmp_path, "h2", "bad")
    first = run_audit(api, "web")
    assert first["status"] == "succeeded" and first["systems"] == 5
    assert first["counts"] | {"pass_rate": None} == {"total": 10, "pass": 9, "fail": 1, "error": 0, "pass_rate": None,
                                                    "new_failures": 1, "fixed": 0}
    assert first["counts"]["pass_rate"] == 0.9
    assert latest_of(api, first["id"]) == {"h1": "pass", "h2": "fail", "h3": "pass", "h4": "pass", "h5": "pass"}
    failing = api.get("/findings", params={"run": first["id"], "status": "fail"}).json()["items"]
    assert len(failing) == 1 and "does not match" in failing[0]["summary"]
    assert failing[0]["evidence"]["output"].strip() == "mode=bad" and failing[0]["duration_ms"] >= 0

    write(tmp_path, "h2", "good")
    write(tmp_path, "h3", "bad")
    second = run_audit(api, "web")
    summary = api.get("/audits/web/summary").json()
    assert summary["run"]["id"] == second["id"] and summary["counts"]["pass_rate"] == 0.9
    assert [(f["system"]["name"], f["check"]["name"]) for f in summary["new_failures"]] == [("h3", "conf-good")]
    assert [(f["system"]["name"], f["check"]["name"]) for f in summary["fixed"]] == [("h2", "conf-good")]
    assert [h["run_id"] for h in summary["history"]] == [second["id"], first["id"]]

    history = api.get("/findings", params={"system": "h2", "check": "conf-good"}).json()["items"]
    assert [(f["status"], f["change"]) for f in history] == [("pass", "fixed"), ("fail", "new_failure")]
    page = api.get("/findings", params={"check": "conf-good", "limit": 3})
    assert len(page.json()["items"]) == 3 and "check=conf-good" in page.json()["next"]

    h3 = api.get("/findings/compliance/h3").json()
    assert h3["compliant"] is False
    assert {f["check"]["name"]: f["status"] for f in h3["checks"]} == {"conf-good": "fail", "machine": "pass"}
    assert api.get("/findings/compliance/h1").json()["compliant"] is True


def test_machine_drift_and_unreachable_systems(api: httpx.Client, tmp_path: Path, live_server) -> None:
    fleet(api, tmp_path, hosts=("h1", "h2"))
    define(api)
    assert act_and_wait(api, "h2", "stop")["status"] == "succeeded"
    assert api.get("/systems/h2").json()["state"] == "stopped"
    # The machine of h1 is stopped behind Armillary's back (the simulated driver's table is its "hypervisor").
    from armillary.domain.jobs import SimulatedMachine

    with live_server[1].session() as session:
        machine = session.scalars(select(SimulatedMachine).where(SimulatedMachine.hostname == "h1")).one()
        machine.state = "stopped"
        session.commit()
    run = run_audit(api, "web")
    drift = api.get("/findings", params={"run": run["id"], "check": "machine"}).json()["items"]
    by_host = {f["system"]["name"]: f for f in drift}
    assert by_host["h1"]["status"] == "fail" and "stopped" in by_host["h1"]["summary"]
    assert by_host["h1"]["evidence"]["drift"][0]["field"] == "state"
    assert by_host["h2"]["status"] == "pass"  # stopped, and the inventory says so


def test_remediation_repairs_kicks_out_and_people_take_over(api: httpx.Client, tmp_path: Path, live_server) -> None:
    fleet(api, tmp_path)
    define(api)
    api.patch("/systems/h4", json={"variables": {"conf": str(conf(tmp_path, "h4")), "broken_fix": True}})
    api.patch("/systems/h5", json={"variables": {"conf": str(conf(tmp_path, "h5")), "noop_fix": True}})
    for host in ("h3", "h4", "h5"):
        write(tmp_path, host, "bad")
    audit_run = run_audit(api, "web")
    assert latest_of(api, audit_run["id"]) == {"h1": "pass", "h2": "pass", "h3": "fail", "h4": "fail", "h5": "fail"}

    started = api.post("/remediations/conf-fix/runs")
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "running" and started.headers["location"].startswith("/api/v1/jobs/")
    run = wait_run(api, started.json()["id"])
    assert run["job"]["status"] == "succeeded", (run["job"]["error"], [s["error"] for s in run["job"]["steps"]])
    assert run["status"] == "failed"  # two systems were not repaired
    assert {r["hostname"]: r["status"] for r in run["results"].values()} == {
        "h3": "repaired", "h4": "kicked_out", "h5": "kicked_out"}
    assert conf(tmp_path, "h3").read_text() == "mode=good\n"
    rechecks = api.get("/findings", params={"remediation_run": run["id"]}).json()["items"]
    assert statuses(rechecks) == {"h3": "pass", "h5": "fail"}  # h4's fix failed: nothing to re-check

    queue = api.get("/attention").json()["items"]
    reasons = {i["system"]["name"]: i["reason"] for i in queue}
    assert set(reasons) == {"h4", "h5"}
    assert "the fix (script) failed" in reasons["h4"] and "exited 3" in reasons["h4"] and "disk full" in reasons["h4"]
    assert reasons["h5"].startswith("still fail after the fix")
    log = api.get(f"/jobs/{run['job_id']}/events").text
    assert "kicked out to the attention queue" in log and "h4" in log
    with live_server[1].session() as session:
        trail = session.scalars(select(AuditEvent).where(AuditEvent.action == "attention.kick_out")).all()
    assert {e.detail["hostname"] for e in trail} >= {"h4", "h5"}

    item = next(i for i in queue if i["system"]["name"] == "h4")
    assert api.post(f"/attention/{item['id']}/assign", json={"assignee": "nobody-here"}).status_code == 422
    assert api.post(f"/attention/{item['id']}/assign", json={"assignee": "admin"}).json()["assignee"] == "admin"
    assert api.post(f"/attention/{item['id']}/ack", json={"reason": "looking"}).json()["status"] == "acknowledged"
    api.post(f"/attention/{item['id']}/comments", json={"text": "the disk was full; cleaned /var/log"})
    done = api.post(f"/attention/{item['id']}/resolve", json={"resolution": "disk cleaned, config rewritten"}).json()
    assert done["status"] == "resolved" and done["resolved_by"] == "admin"
    assert [e["kind"] for e in done["events"]] == ["opened", "assigned", "acknowledged", "comment", "resolved"]
    again = api.post(f"/attention/{item['id']}/ack")
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")
    assert [i["system"]["name"] for i in api.get("/attention").json()["items"]] == ["h5"]
    assert len(api.get("/attention", params={"status": "resolved"}).json()["items"]) == 1
    compliance = api.get("/findings/compliance/h5").json()
    assert compliance["compliant"] is False and compliance["attention"][0]["status"] == "open"

    nothing = api.post("/remediations/conf-fix/runs", json={"systems": ["h1"]})
    assert nothing.status_code == 409  # h1 passes: nothing to fix


def test_max_failures_stops_the_run_after_the_second_failure(api: httpx.Client, tmp_path: Path) -> None:
    fleet(api, tmp_path)
    define(api, batch_size=1, concurrency=1, max_failures=1)
    for host in ("h2", "h4"):
        api.patch(f"/systems/{host}", json={"variables": {"conf": str(conf(tmp_path, host)), "broken_fix": True}})
    for host in ("h2", "h3", "h4", "h5"):
        write(tmp_path, host, "bad")
    run_audit(api, "web")
    run = wait_run(api, api.post("/remediations/conf-fix/runs").json()["id"])
    assert run["status"] == "stopped" and run["job"]["status"] == "failed"
    assert "max_failures=1" in run["job"]["error"]
    assert {r["hostname"]: r["status"] for r in run["results"].values()} == {
        "h2": "kicked_out", "h3": "repaired", "h4": "kicked_out"}
    assert conf(tmp_path, "h5").read_text() == "mode=bad\n"  # after the stop: left alone


def test_approval_gate_waits_for_another_operator(api: httpx.Client, tmp_path: Path, live_server) -> None:
    db = live_server[1]
    fleet(api, tmp_path, env="prod", hosts=("p1", "p2"), requires_approval=True)
    assert api.get("/environments/prod").json()["requires_approval"] is True
    define(api, selector={"environment": "prod"})
    write(tmp_path, "p1", "bad")
    run_audit(api, "web")
    clients = {}
    for name, role in (("olga", "operator"), ("oscar", "operator"), ("vic", "viewer")):
        ensure_user(db, name)
        grant(db, name, "prod", role)
        clients[name] = httpx.Client(base_url=str(api.base_url), headers=bearer(token_for(db, name)), timeout=30)
    try:
        viewer_run = clients["vic"].post("/remediations/conf-fix/runs")
        assert viewer_run.status_code == 403
        assert clients["vic"].get("/findings", params={"check": "conf-good"}).status_code == 200  # viewers read

        asked = clients["olga"].post("/remediations/conf-fix/runs")
        assert asked.status_code == 202, asked.text
        run = asked.json()
        assert run["status"] == "awaiting_approval" and run["job_id"] is None and "prod" in run["reason"]
        assert "location" not in asked.headers
        own = clients["olga"].post(f"/remediations/runs/{run['id']}/approve")
        assert own.status_code == 403 and "another operator" in own.json()["detail"]
        assert clients["vic"].post(f"/remediations/runs/{run['id']}/approve").status_code == 403
        assert conf(tmp_path, "p1").read_text() == "mode=bad\n"  # nothing ran while it waited

        approved = clients["oscar"].post(f"/remediations/runs/{run['id']}/approve")
        assert approved.status_code == 202, approved.text
        done = wait_run(api, run["id"])
        assert done["approved_by"] == "oscar" and done["requested_by"] == "olga" and done["approved_at"]
        assert done["status"] == "succeeded" and conf(tmp_path, "p1").read_text() == "mode=good\n"
        assert clients["oscar"].post(f"/remediations/runs/{run['id']}/approve").status_code == 409

        write(tmp_path, "p2", "bad")
        run_audit(api, "web")
        assert api.post("/environments/prod/lock", json={"reason": "release freeze"}).status_code == 200
        locked = clients["oscar"].post("/remediations/conf-fix/runs")
        assert locked.status_code == 409 and "release freeze" in locked.json()["detail"]
        assert api.post("/environments/prod/unlock").status_code in (200, 204)
        second = clients["oscar"].post("/remediations/conf-fix/runs").json()
        rejected = clients["olga"].post(f"/remediations/runs/{second['id']}/reject", json={"reason": "freeze"})
        assert rejected.json()["status"] == "rejected" and rejected.json()["rejected_by"] == "olga"
        assert conf(tmp_path, "p2").read_text() == "mode=bad\n"
    finally:
        for client in clients.values():
            client.close()


def test_bad_definitions_are_refused_with_the_field_named(api: httpx.Client) -> None:
    bad = [
        ({"name": "c1", "kind": "command", "spec": {}}, "spec.command"),
        ({"name": "c2", "kind": "command", "spec": {"command": ["true"], "expect_pattern": "("}},
         "spec.expect_pattern"),
        ({"name": "c3", "kind": "facts", "spec": {"expect": ["facts.os.version =="]}}, "spec.expect"),
        ({"name": "c4", "kind": "facts", "spec": {"expect": ["true"], "gather": ["passwords"]}}, "spec.gather"),
        ({"name": "c5", "kind": "nonsense", "spec": {}}, "kind"),
    ]
    for body, field in bad:
        answer = api.post("/checks", json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert any(e["field"].startswith(field) for e in answer.json()["errors"]), (field, answer.json())
    assert api.post("/checks", json={"name": "ok", "kind": "command", "spec": {"command": ["true"]}}).status_code == 201
    assert api.post("/remediations", json={"name": "r", "check": "ok", "kind": "script", "spec": {"script": "true"},
                                           "max_failures": "150%"}).status_code == 422
    assert api.post("/audits", json={"name": "a", "selector": {}, "checks": ["ok"]}).status_code == 422
    assert api.post("/audits", json={"name": "a", "selector": {"labels": {"x": "y"}},
                                     "checks": ["missing"]}).status_code == 422
    made = api.post("/audits", json={"name": "a", "selector": {"labels": {"x": "y"}}, "checks": ["ok"]})
    assert made.status_code == 201, made.text
    nothing = api.post("/audits/a/runs")
    assert nothing.status_code == 422 and "selects no systems" in nothing.json()["detail"]


def test_a_secret_printed_by_a_check_is_stored_masked(api: httpx.Client, tmp_path: Path) -> None:
    fleet(api, tmp_path, hosts=("h1",))
    api.patch("/systems/h1", json={"variables": {"conf": str(conf(tmp_path, "h1")), "db_password": "alice-pw"}})
    check = api.post("/checks", json={"name": "leaky", "kind": "command",
                                      "spec": {"command": 'echo "password is $db_password"; exit 1'}})
    assert check.status_code == 201
    assert api.post("/audits", json={"name": "leak", "selector": {"systems": ["h1"]},
                                     "checks": ["leaky"]}).status_code == 201
    run = run_audit(api, "leak")
    finding = api.get("/findings", params={"run": run["id"]}).json()["items"][0]
    assert finding["status"] == "fail" and "password is ***" in finding["evidence"]["output"]
    assert "alice-pw" not in str(finding)


def test_a_scheduled_audit_runs_once_per_tick_with_two_servers(api: httpx.Client, tmp_path: Path,
                                                                live_server) -> None:
    from sqlalchemy import func

    from armillary.audits.models import AuditRun
    from armillary.domain.jobs import Schedule
    from armillary.domain.models import utcnow
    from tests.support.server import running_app

    fleet(api, tmp_path, hosts=("h1", "h2"))
    define(api)
    assert api.put("/audits/web/schedule", json={"cron": "0 3 * * *", "timezone": "Nope/Where"}).status_code == 422
    shown = api.put("/audits/web/schedule", json={"cron": "0 3 * * *"})
    assert shown.status_code == 200 and shown.json()["schedule"] == "audit-web"
    assert api.get("/schedules/audit-web").json()["job"] == {"audit": "web"}
    for refused in (api.patch("/schedules/audit-web", json={"job": {"action": "destroy", "selector": {"labels": {"a": "b"}}}}),
                    api.delete("/schedules/audit-web")):  # the audit's own: changed through the audit only
        assert refused.status_code == 409 and "/audits/web/schedule" in refused.json()["detail"], refused.text
    _, db = live_server

    def tick_now() -> None:  # the next 03:00 is now, for both servers
        with db.engine.begin() as conn:
            conn.execute(Schedule.__table__.update().where(Schedule.name == "audit-web")
                         .values(next_run_at=utcnow()))

    def runs() -> int:
        with db.session() as session:
            return session.scalar(select(func.count()).select_from(AuditRun))

    # A second server process on the same database (its own engine, which fires schedules too).
    with running_app(db.url, tmp_path / "second") as (_second_url, second_db):
        try:
            for expected in (1, 2):
                tick_now()
                deadline = time.monotonic() + 20
                while runs() < expected and time.monotonic() < deadline:
                    time.sleep(0.05)
                time.sleep(1.5)  # both engines have polled the due schedule by now
                assert runs() == expected
            latest = api.get("/audits/web/runs").json()["items"][0]
            job = wait_job(api, latest["job_id"])
            assert job["status"] == "succeeded" and job["actor"] == "schedule:audit-web"
        finally:
            second_db.dispose()
    assert api.delete("/audits/web").status_code == 204
    assert api.get("/schedules/audit-web").status_code == 404

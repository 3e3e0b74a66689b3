"""kill -9 of the server in the middle of an audit run, then a restart: the run ends with exactly one finding
per system and check (a batch the dead server had half written is written again, never twice), the run's
counts match its findings, and no lock, lease or running step is left behind.

PostgreSQL only, like tests/test_clusters_crash.py: the crash paths are the engine's (leases, the reaper,
a step retried after its worker died), exercised on SQLite by tests/test_crash.py; what is specific here is
the audit workflow's batch step, which deletes what an earlier attempt of the same batch wrote.
The check is the built-in machine drift (a driver status call per system, made slow by the simulated
driver's latency), so the server runs as a plain ``armillary serve`` with no test-only plugin.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.support.databases import database
from tests.support.jobs import wait_job
from tests.support.subprocess_server import ServerProcess

SYSTEMS = 24


@pytest.fixture
def db_url(tmp_path) -> Iterator[str]:
    with database("postgresql", tmp_path) as url:
        yield url


def rows(url: str, sql: str, **params) -> list:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def findings_of(url: str, run_id: int) -> list[tuple[int, int, str]]:
    return [tuple(r) for r in rows(url, "SELECT system_id, check_id, status FROM findings WHERE run_id = :run "
                                        "ORDER BY system_id, check_id", run=run_id)]


def test_kill_during_an_audit_run_then_restart_records_each_finding_once(db_url: str, tmp_path) -> None:
    env = {"ARMILLARY_DATABASE_URL": db_url, "ARMILLARY_LEASE_SECONDS": "2"}
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as api:
            assert api.post("/environments", json={"name": "dev"}).status_code == 201
            assert api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                                  "config": {"latency_ms": 40}}).status_code == 201
            for n in range(SYSTEMS):
                made = api.post("/systems", json={"hostname": f"a{n:02d}", "environment": "dev", "hypervisor": "sim",
                                                  "labels": {"role": "web"}})
                assert made.status_code == 201, made.text
            bulk = api.post("/jobs", json={"action": "create", "selector": {"labels": {"role": "web"}},
                                           "concurrency": 24})
            assert bulk.status_code == 202, bulk.text
            assert wait_job(api, bulk.json()["id"], timeout_s=120)["status"] == "succeeded"
            assert api.post("/checks", json={"name": "machine", "kind": "machine_drift"}).status_code == 201
            made = api.post("/audits", json={"name": "web", "selector": {"labels": {"role": "web"}},
                                             "checks": ["machine"], "batch_size": 4, "concurrency": 1})
            assert made.status_code == 201, made.text
            # each status call now takes 0.3 s: the run lasts ~7 s, long enough to be killed in the middle
            slow = api.patch("/hypervisors/sim", json={"config": {"latency_ms": 300}})
            assert slow.status_code == 200, slow.text
            started = api.post("/audits/web/runs")
            assert started.status_code == 202, started.text
            run = started.json()
        deadline = time.monotonic() + 60
        while len(findings_of(db_url, run["id"])) < 6:
            assert time.monotonic() < deadline, "the audit run never got going"
            time.sleep(0.05)
        assert len(findings_of(db_url, run["id"])) < SYSTEMS, "too late: the run ended before the kill"
    finally:
        server.kill()  # SIGKILL: no clean-up of any kind

    again = ServerProcess(tmp_path / "data", env).start()
    try:
        with again.client() as api:
            assert wait_job(api, run["job_id"], timeout_s=120)["status"] == "succeeded"
            shown = api.get(f"/audits/web/runs/{run['id']}").json()
            assert shown["status"] == "succeeded" and shown["systems"] == SYSTEMS
            assert shown["counts"]["total"] == SYSTEMS and shown["counts"]["pass"] == SYSTEMS, shown
            found = findings_of(db_url, run["id"])
            assert len(found) == SYSTEMS and len({s for s, _, _ in found}) == SYSTEMS  # each once, none twice
            assert {status for _, _, status in found} == {"pass"}
            # the audit takes the next run: nothing was left locked
            assert api.patch("/hypervisors/sim", json={"config": {"latency_ms": 0}}).status_code == 200
            second = api.post("/audits/web/runs")
            assert second.status_code == 202, second.text
            assert wait_job(api, second.json()["job_id"], timeout_s=60)["status"] == "succeeded"
        assert rows(db_url, "SELECT resource FROM locks") == []
        assert rows(db_url, "SELECT id FROM steps WHERE status = 'running'") == []
    finally:
        again.stop()

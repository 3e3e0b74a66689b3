"""Crash safety with a real process and a real SIGKILL, on SQLite and PostgreSQL.

The server is killed while a create runs on the simulated driver, after the driver made the
machine but before the step recorded it. A new server must finish the job, adopting the machine
(never creating a twin), leave no lease or lock behind, and the system's state must be consistent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.support.databases import database
from tests.support.jobs import wait_job
from tests.support.subprocess_server import ServerProcess


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


def rows(url: str, sql: str, **params) -> list:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def test_kill_mid_create_then_restart_adopts_the_machine(db_url: str, tmp_path) -> None:
    env = {"ARMILLARY_DATABASE_URL": db_url, "ARMILLARY_LEASE_SECONDS": "2"}
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as api:
            api.post("/environments", json={"name": "dev"})
            # Each call takes 0.5 s and a new machine stays pending for 4 status reads: a window of ~2 s in
            # which the machine exists but the create step has not finished.
            api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                           "config": {"latency_ms": 500, "boot_calls": 4}})
            system = api.post("/systems", json={"hostname": "crashme", "environment": "dev",
                                                "hypervisor": "sim"}).json()
            job = api.post(f"/systems/{system['id']}/actions", json={"action": "create"}).json()
        deadline = time.monotonic() + 30
        # The machine exists and its id is recorded (the step stores it the moment the driver returns; a
        # kill in the few ms between would leave a machine the retry adopts without knowing it did).
        while not rows(db_url, "SELECT id FROM systems WHERE id = :s AND provider_id IS NOT NULL", s=system["id"]):
            assert time.monotonic() < deadline, "the driver never created the machine"
            time.sleep(0.05)
        assert rows(db_url, "SELECT id FROM simulated_machines WHERE system_id = :s", s=system["id"])
        step = rows(db_url, "SELECT status FROM steps WHERE job_id = :j AND name = 'create_machine'", j=job["id"])
        assert step[0][0] == "running"
    finally:
        server.kill()  # SIGKILL: no clean-up of any kind

    restarted = ServerProcess(tmp_path / "data", env).start()
    try:
        with restarted.client() as api:
            done = wait_job(api, job["id"], timeout_s=60)
            assert done["status"] == "succeeded", done
            create = next(s for s in done["steps"] if s["name"] == "create_machine")
            assert create["attempts"] == 2 and create["lease_owner"] is None
            messages = [e["message"] for e in api.get(f"/jobs/{job['id']}/events").json()["items"]]
            assert any("lease of worker" in m and "expired" in m for m in messages)
            assert any(m.startswith("adopted existing machine") for m in messages)
            after = api.get(f"/systems/{system['id']}").json()
            assert after["state"] == "created" and after["machine"]["addresses"]
            machines = rows(db_url, "SELECT id FROM simulated_machines WHERE system_id = :s", s=system["id"])
            assert len(machines) == 1 and after["machine"]["addresses"] == done["context"]["addresses"]
            # And the system can be acted on again: its lock was released.
            assert wait_job(api, api.post(f"/systems/{system['id']}/actions",
                                          json={"action": "destroy"}).json()["id"])["status"] == "succeeded"
        assert rows(db_url, "SELECT id FROM simulated_machines WHERE system_id = :s", s=system["id"]) == []
        assert rows(db_url, "SELECT resource FROM locks") == []
        assert rows(db_url, "SELECT id FROM steps WHERE status = 'running'") == []
    finally:
        restarted.stop()

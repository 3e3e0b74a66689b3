"""kill -9 of the server in the middle of a stack's apply (12 systems in two layers, 3 at a time), then a
restart: the apply resumes (or ends), a second apply completes, and every system has exactly one machine:
none made twice, none left untracked, no lock left held.

PostgreSQL only: the crash paths are the engine's (leases, the reaper, adopt-on-retry), exercised on SQLite
by tests/test_crash.py; a second database would double a slow test for no path of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.support.databases import database
from tests.support.jobs import wait_job
from tests.support.subprocess_server import ServerProcess

TEMPLATE = {"armillary_template_version": 1, "resources": {
    **{f"a{i}": {"type": "Armillary::System", "properties": {"hypervisor": "sim"}} for i in range(6)},
    **{f"b{i}": {"type": "Armillary::System", "depends_on": [f"a{i}"], "properties": {"hypervisor": "sim"}}
       for i in range(6)}}}


@pytest.fixture
def db_url(tmp_path) -> Iterator[str]:
    with database("postgresql", tmp_path) as url:
        yield url


def rows(url: str, sql: str) -> list:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def machines(url: str) -> list[int]:
    return [r[0] for r in rows(url, "SELECT system_id FROM simulated_machines ORDER BY 1")]


def test_kill_during_apply_then_restart_and_apply_again(db_url: str, tmp_path) -> None:
    env = {"ARMILLARY_DATABASE_URL": db_url, "ARMILLARY_LEASE_SECONDS": "2"}
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as api:
            api.post("/environments", json={"name": "dev"})
            api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                           "config": {"latency_ms": 150}})
            made = api.post("/stacks", json={"name": "app", "environment": "dev", "template": TEMPLATE,
                                             "parallelism": 3})
            assert made.status_code == 201, made.text
            first = api.post("/stacks/app/apply", json={}).json()
        deadline = time.monotonic() + 60
        while len(machines(db_url)) < 3:
            assert time.monotonic() < deadline, "the apply never got going"
            time.sleep(0.02)
        assert len(machines(db_url)) < 12, "too late: the apply ended before the kill"
    finally:
        server.kill()  # SIGKILL: no clean-up of any kind

    again = ServerProcess(tmp_path / "data", env).start()
    try:
        with again.client() as api:
            wait_job(api, first["id"], timeout_s=120)  # resumed by the engine (or ended): never wedged
            second = api.post("/stacks/app/apply", json={})
            assert second.status_code == 202, second.text
            assert wait_job(api, second.json()["id"], timeout_s=120)["status"] == "succeeded"
            stack = api.get("/stacks/app").json()
            assert stack["status"] == "complete" and stack["resources"] == 12, stack
            resources = api.get("/stacks/app/resources").json()
            assert all(r["status"] == "complete" for r in resources), resources
            ids = sorted(int(r["physical_id"]) for r in resources)
        # one machine per system, each tracked by its system: no twin, no orphan
        assert machines(db_url) == ids
        assert sorted(r[0] for r in rows(db_url, "SELECT id FROM systems")) == ids
        assert rows(db_url, "SELECT resource FROM locks") == []
        assert rows(db_url, "SELECT id FROM steps WHERE status = 'running'") == []
    finally:
        again.stop()

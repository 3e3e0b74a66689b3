"""kill -9 of the server while one cluster scales out by 20 members, another scales in by 10 and a third
rolls onto a new profile revision (update-profile, in batches), then a restart: the operations end, each cluster's members are what the database says, every machine is tracked
by a system, and no lock or lease stays held (a cluster is never wedged "resizing").

The operations run at once, so one kill and one restart cover them all (two server starts, not four).
PostgreSQL only: the crash paths are the engine's (leases, the reaper, adopt-on-retry), which
tests/test_crash.py exercises on SQLite too; here a server start, a kill and a restart on a second
database would double the slowest test of the clusters feature for no path of its own.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.support.databases import database
from tests.support.jobs import wait_job
from tests.support.subprocess_server import ServerProcess


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


def machines_of(url: str, cluster: str) -> tuple[list[int], list[int]]:
    """(system ids holding a simulated machine, member system ids) of one cluster, sorted."""
    members = [r[0] for r in rows(url, "SELECT m.system_id FROM cluster_members m JOIN clusters c "
                                       "ON c.id = m.cluster_id WHERE c.name = :name ORDER BY 1", name=cluster)]
    machines = [r[0] for r in rows(url, "SELECT system_id FROM simulated_machines ORDER BY 1")]
    return [m for m in machines if m in set(members)], members


def revisions_of(url: str, cluster: str) -> list[int]:
    return [r[0] for r in rows(url, "SELECT m.profile_revision FROM cluster_members m JOIN clusters c "
                                    "ON c.id = m.cluster_id WHERE c.name = :name", name=cluster)]


def test_kill_during_scale_out_and_scale_in_then_restart_finishes_them(db_url: str, tmp_path) -> None:
    env = {"ARMILLARY_DATABASE_URL": db_url, "ARMILLARY_LEASE_SECONDS": "2"}
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as api:
            api.post("/environments", json={"name": "dev"})
            api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                           "config": {"latency_ms": 150}})
            for profile in ("web", "rolled"):
                assert api.post("/profiles", json={"name": profile, "environment": "dev", "hypervisor": "sim"}
                                ).status_code == 201
            made = [api.post("/clusters", json={"name": "grow", "profile": "web", "concurrency": 4}),
                    api.post("/clusters", json={"name": "shrink", "profile": "web", "desired": 20,
                                                "concurrency": 20}),
                    api.post("/clusters", json={"name": "roll", "profile": "rolled", "desired": 6})]
            assert all(wait_job(api, m.json()["id"], timeout_s=60)["status"] == "succeeded" for m in made)
            assert api.patch("/clusters/shrink", json={"concurrency": 1}).status_code == 200
            out = api.post("/clusters/grow/scale-out", json={"count": 20}).json()
            shrink = api.post("/clusters/shrink/scale-in", json={"count": 10}).json()
            assert api.patch("/profiles/rolled", json={"variables": {"release": 2}}).json()["revision"] == 2
            roll = api.post("/clusters/roll/update-profile", json={"max_batch_size": 2, "min_in_service": 5,
                                                                   "pause_seconds": 1}).json()
        deadline = time.monotonic() + 60
        while not (len(machines_of(db_url, "grow")[0]) >= 5 and len(machines_of(db_url, "shrink")[0]) <= 18
                   and 2 in revisions_of(db_url, "roll")):
            assert time.monotonic() < deadline, "the operations never got going"
            time.sleep(0.05)
        assert len(machines_of(db_url, "grow")[0]) < 20 and len(machines_of(db_url, "shrink")[0]) > 10 \
            and 1 in revisions_of(db_url, "roll"), "too late: an operation ended before the kill"
    finally:
        server.kill()  # SIGKILL: no clean-up of any kind

    again = ServerProcess(tmp_path / "data", env).start()
    try:
        with again.client() as api:
            assert wait_job(api, out["id"], timeout_s=90)["status"] == "succeeded"
            assert wait_job(api, shrink["id"], timeout_s=90)["status"] == "succeeded"
            assert wait_job(api, roll["id"], timeout_s=90)["status"] == "succeeded"
            assert revisions_of(db_url, "roll") == [2] * 6  # every member replaced once, none twice
            for name, size in (("grow", 20), ("shrink", 10), ("roll", 6)):
                cluster = api.get(f"/clusters/{name}").json()
                assert (cluster["members"], cluster["active_members"], cluster["status"]) == (size, size, "active"), \
                    cluster
                assert cluster["running_job_id"] is None
                # one machine per member, each tracked by its system: no twin, no orphan
                machines, members = machines_of(db_url, name)
                assert machines == members and len(members) == size
            # the cluster takes the next operation: nothing was left locked
            assert wait_job(api, api.post("/clusters/shrink/scale-in", json={"count": 1}).json()["id"],
                            timeout_s=60)["status"] == "succeeded"
        assert len(rows(db_url, "SELECT id FROM simulated_machines")) == 35
        assert len(rows(db_url, "SELECT id FROM systems")) == 35  # the destroyed members' records are gone
        assert rows(db_url, "SELECT resource FROM locks") == []
        assert rows(db_url, "SELECT id FROM steps WHERE status = 'running'") == []
    finally:
        again.stop()

"""Addresses survive a real SIGKILL mid-create, on SQLite and PostgreSQL: never given twice, never lost.

The server is killed after the create step took the system's address and while the (simulated) driver
is still making the machine. The restarted server retries the step: it must find the address it took
(the machine gets that one, no second is taken), and a create that ends without a machine gives it back.
"""

from __future__ import annotations

import time

from tests.support.jobs import wait_job
from tests.support.subprocess_server import ServerProcess
from tests.test_crash import db_url, rows  # noqa: F401  (the database fixture, both backends)


def _wait_for(url: str, sql: str, timeout_s: float = 30, **params) -> list:
    deadline = time.monotonic() + timeout_s
    while not (found := rows(url, sql, **params)):
        assert time.monotonic() < deadline, f"never true: {sql}"
        time.sleep(0.05)
    return found


def test_kill_mid_create_keeps_one_address_per_machine(db_url: str, tmp_path) -> None:  # noqa: F811
    env = {"ARMILLARY_DATABASE_URL": db_url, "ARMILLARY_LEASE_SECONDS": "2"}
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as api:
            api.post("/environments", json={"name": "dev"})
            api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                           "config": {"latency_ms": 1500}})
            api.post("/ip-pools", json={"name": "lan", "environment": "dev", "cidr": "10.7.0.0/29"})
            first = api.post("/systems", json={"hostname": "crashme", "environment": "dev", "hypervisor": "sim"}).json()
            job = api.post(f"/systems/{first['id']}/actions", json={"action": "create"}).json()
        # The address is taken (before the driver call), the machine not made yet: kill now.
        taken = _wait_for(db_url, "SELECT address FROM ip_addresses WHERE system_id = :s", s=first["id"])
        assert not rows(db_url, "SELECT id FROM simulated_machines WHERE system_id = :s", s=first["id"])
    finally:
        server.kill()

    restarted = ServerProcess(tmp_path / "data", env).start()
    try:
        with restarted.client() as api:
            done = wait_job(api, job["id"], timeout_s=60)
            assert done["status"] == "succeeded", done
            held = rows(db_url, "SELECT address FROM ip_addresses WHERE system_id = :s", s=first["id"])
            assert held == taken  # the retry found its own address: none taken twice, none leaked
            assert api.get(f"/systems/{first['id']}").json()["machine"]["addresses"] == [taken[0][0]]
            second = api.post("/systems", json={"hostname": "after", "environment": "dev", "hypervisor": "sim"}).json()
            api.patch("/hypervisors/sim", json={"config": {"latency_ms": 0}})
            assert wait_job(api, api.post(f"/systems/{second['id']}/actions", json={"action": "create"}).json()["id"],
                            timeout_s=60)["status"] == "succeeded"
            addresses = [r[0] for r in rows(db_url, "SELECT address FROM ip_addresses ORDER BY address")]
            assert len(addresses) == len(set(addresses)) == 2
            assert wait_job(api, api.post(f"/systems/{first['id']}/actions", json={"action": "destroy"}).json()["id"],
                            timeout_s=60)["status"] == "succeeded"
        assert rows(db_url, "SELECT address FROM ip_addresses WHERE system_id = :s", s=first["id"]) == []
    finally:
        restarted.stop()


def test_a_create_killed_and_then_failed_gives_its_address_back(db_url: str, tmp_path) -> None:  # noqa: F811
    """After a kill, the retried create fails for good (its driver is gone): the address is free again, given
    back by the sweep of what crashes leave (a system with no machine and no job under way holds nothing)."""
    env = {"ARMILLARY_DATABASE_URL": db_url, "ARMILLARY_LEASE_SECONDS": "2"}
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as api:
            api.post("/environments", json={"name": "dev"})
            api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                           "config": {"latency_ms": 1500}})
            api.post("/ip-pools", json={"name": "lan", "environment": "dev", "cidr": "10.7.0.0/29"})
            system = api.post("/systems", json={"hostname": "doomed", "environment": "dev", "hypervisor": "sim"}).json()
            job = api.post(f"/systems/{system['id']}/actions", json={"action": "create"}).json()
        _wait_for(db_url, "SELECT address FROM ip_addresses WHERE system_id = :s", s=system["id"])
    finally:
        server.kill()
    # What the retry will meet: a hypervisor whose driver is gone (a permanent failure, and no machine).
    _break_hypervisor(db_url)
    restarted = ServerProcess(tmp_path / "data", env).start()
    try:
        with restarted.client() as api:
            done = wait_job(api, job["id"], timeout_s=60)
            assert done["status"] == "failed", done
            assert api.get("/ip-addresses", params={"pool": "lan"}).json()["items"] == []
            assert api.get("/ip-pools/lan").json()["utilization"]["used"] == 0
    finally:
        restarted.stop()


def _break_hypervisor(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE hypervisors SET driver = 'uninstalled'"))
    finally:
        engine.dispose()

"""``armillary check``, ``audits``, ``remediate`` and ``attention``: the real command (a subprocess) against the
session's server. The machines are the ``simulated`` driver's and the check is the machine-drift check: a
machine stopped behind Armillary's back (in the simulated driver's table, its "hypervisor") is found, and
the ``recover`` lifecycle fix starts it again. Runs once, on SQLite (the CLI is a client of the API; the API
runs on both databases in tests/test_audits.py)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from armillary.domain.jobs import SimulatedMachine
from tests.support.cli import Cli
from tests.support.jobs import act_and_wait, sim_setup

# The CLI scenario runs once, on SQLite; tests/test_audits.py covers both databases.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def test_drift_found_recovered_and_followed_from_the_cli(api: httpx.Client, live_server, admin_token: str,
                                                         backend: str, tmp_path: Path) -> None:
    base_url, db = live_server
    sim_setup(api, systems=("m1", "m2"), labels={"tier": "db"})
    for host in ("m1", "m2"):
        assert act_and_wait(api, host, "create")["status"] == "succeeded"
    with db.engine.begin() as conn:
        conn.execute(update(SimulatedMachine).where(SimulatedMachine.hostname == "m2").values(state="stopped"))
    cli = Cli(base_url, tmp_path)

    def run(*args: str):
        return cli(*args, env={"ARMILLARY_TOKEN": admin_token})

    def ok(*args: str):
        result = run(*args)
        assert result.code == 0, str(result)
        return result

    ok("check", "create", "machine", "--kind", "machine_drift", "--severity", "critical", "--tag", "infra")
    ok("audits", "create", "db", "--check", "machine", "-l", "tier=db")
    ran = ok("audits", "run", "db", "--wait")
    assert "pass rate 50.0%" in ran.out and "1 new failures" in ran.out and "m2" in ran.out

    found = json.loads(ok("audits", "findings", "db", "--status", "fail", "-o", "json").out)["items"]
    assert [(f["system"]["name"], f["check"]["name"]) for f in found] == [("m2", "machine")]
    assert run("audits", "compliance", "m2").code == 1  # not compliant: scripts see it

    ok("remediate", "create", "restart", "--check", "machine", "--kind", "action", "--action", "recover",
       "--max-failures", "10%")
    fixed = ok("remediate", "run", "restart", "--wait")
    assert "repaired" in fixed.out and "m2" in fixed.out
    history = json.loads(ok("audits", "findings", "--system", "m2", "--check", "machine", "-o", "json").out)["items"]
    assert [f["status"] for f in history] == ["pass", "fail"] and history[0]["remediation_run_id"]
    assert json.loads(ok("attention", "list", "-o", "json").out)["items"] == []
    scheduled = json.loads(ok("audits", "schedule", "db", "--cron", "0 3 * * *", "-o", "json").out)
    assert scheduled["schedule"] == "audit-db" and scheduled["enabled"] is True

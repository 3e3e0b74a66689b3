"""``armillary cluster``, ``profile``, ``policy`` and ``receiver`` against the suite's running server.

The CLI runs in this process (typer's runner) against the session's real HTTP server (``live_server``),
signed in by ``ARMILLARY_TOKEN``: what this file tests is the cluster commands, not the start of a
process or ``armillary login`` (tests/test_cli.py and tests/test_cli_auth.py run the installed command as a
subprocess). That keeps it to a second or two instead of a server start and a login plus a Python start
per command. SQLite only: the API under it runs on both databases in tests/test_clusters.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from armillary.cli.main import app
from tests.support.cli import Result, clean_env

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


class InProcessCli:
    def __init__(self, url: str, token: str, config_dir: Path) -> None:
        self.env = clean_env(ARMILLARY_URL=url, ARMILLARY_TOKEN=token, ARMILLARY_CONFIG_DIR=str(config_dir))

    def __call__(self, *args: str) -> Result:
        done = CliRunner().invoke(app, list(args), env=self.env)
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            raise done.exception
        return Result(args, done.exit_code, done.stdout, done.stderr)

    def ok(self, *args: str) -> Result:
        result = self(*args)
        assert result.code == 0, str(result)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json").out)


def test_cluster_commands(api: httpx.Client, base_url: str, admin_token: str, tmp_path: Path) -> None:
    cli = InProcessCli(base_url, admin_token, tmp_path)
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    assert api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated"}
                    ).status_code == 201
    cli.ok("profile", "create", "web", "--env", "dev", "--hypervisor", "sim", "--cpu", "1", "--label", "tier=web")
    cli.ok("cluster", "create", "web", "--profile", "web", "--desired", "2", "--min", "1", "--wait")
    cli.ok("policy", "create", "out", "--kind", "scaling", "--spec", "direction=out", "--spec", "cooldown=600")
    cli.ok("cluster", "attach", "web", "out")
    cli.ok("cluster", "scale-out", "web", "--count", "3", "--wait")
    cooling = cli("cluster", "scale-out", "web")
    assert cooling.code != 0 and "cooling down until" in cooling.err + cooling.out
    cli.ok("cluster", "resize", "web", "--percent", "-30", "--wait")  # -1.5 → -1 (a scale-in: no cooldown)
    members = cli.json("cluster", "members", "web")
    assert [m["hostname"] for m in members] == ["web-001", "web-002", "web-003", "web-004"]
    refused = cli("cluster", "scale-in", "web", "--count", "9")
    assert refused.code != 0 and "min" in refused.err + refused.out
    receiver = cli.json("receiver", "create", "grow", "--cluster", "web", "--operation", "scale_out",
                        "--param", "count=1")
    assert receiver["secret"] and "/receivers/hooks/" in receiver["url"]
    # a rolling update-profile after the profile changed; a schedule; recover by reboot
    assert api.patch("/profiles/web", json={"labels": {"tier": "web", "v": "2"}}).json()["revision"] == 2
    cli.ok("cluster", "update-profile", "web", "--version", "2", "--max-batch-size", "2", "--min-in-service", "3",
           "--wait")
    assert {m["profile_revision"] for m in cli.json("cluster", "members", "web")} == {2}
    scheduled = cli.json("cluster", "schedule", "web", "evening", "--cron", "0 20 * * *", "--operation", "resize",
                         "--param", "number=2")
    assert scheduled["params"] == {"number": 2} and scheduled["operation"] == "resize"
    assert [s["name"] for s in cli.json("cluster", "schedules", "web")] == ["evening"]
    cli.ok("cluster", "unschedule", "web", "evening")
    cli.ok("cluster", "recover", "web", "--action", "reboot", "--wait")  # nothing failed: nothing to do
    cli.ok("cluster", "delete", "web", "--wait")
    assert "No clusters" in cli.ok("cluster", "list").err

"""``armillary stack`` against the suite's running server, in this process (typer's runner; see
tests/test_clusters_cli.py for why): validate, create, a coloured Terraform-like plan, apply --wait,
resources, outputs, events, check, converge, delete. SQLite only: the API under it runs on both databases
in tests/test_stacks.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from armillary.cli.main import app
from tests.support.cli import Result, clean_env

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

class InProcessCli:
    def __init__(self, url: str, token: str, config_dir: Path) -> None:
        self.env = clean_env(ARMILLARY_URL=url, ARMILLARY_TOKEN=token, ARMILLARY_CONFIG_DIR=str(config_dir))

    def ok(self, *args: str) -> Result:
        done = CliRunner().invoke(app, list(args), env=self.env)
        if done.exception is not None and not isinstance(done.exception, SystemExit):
            raise done.exception
        result = Result(args, done.exit_code, done.stdout, done.stderr)
        assert result.code == 0, str(result)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json").out)


TEMPLATE = {
    "armillary_template_version": 1,
    "parameters": {"image": {"type": "string", "default": "nginx"}, "token": {"type": "string", "hidden": True}},
    "resources": {
        "db": {"type": "Armillary::System", "properties": {"hypervisor": "sim"}},
        "web": {"type": "Armillary::System", "properties": {
            "hypervisor": "sim", "driver": {"image": {"get_param": "image"}},
            "variables": {"token": {"get_param": "token"}, "db": {"get_attr": ["db", "hostname"]}}}},
    },
    "outputs": {"web": {"value": {"get_attr": ["web", "hostname"]}}},
}


def test_stack_commands(api: httpx.Client, base_url: str, admin_token: str, tmp_path: Path) -> None:
    cli = InProcessCli(base_url, admin_token, tmp_path)
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    assert api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated"}
                    ).status_code == 201
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(TEMPLATE))
    assert cli.json("stack", "validate", str(path))["valid"] is True
    cli.ok("stack", "create", "app", str(path), "--env", "dev", "-p", "token=t0ps3cret-value")
    plan = cli.ok("stack", "plan", "app").out
    assert "+ db (Armillary::System)" in plan and "Plan 1: 2 to add" in plan, plan
    cli.ok("stack", "apply", "app", "--plan", "1", "--wait")
    resources = cli.json("stack", "resources", "app")
    assert {r["name"]: r["status"] for r in resources} == {"db": "complete", "web": "complete"}
    assert cli.json("stack", "outputs", "app") == {"web": "app-web"}
    replace = cli.ok("stack", "plan", "app", "-p", "image=httpd").out
    assert "-/+ web" in replace and "forces replacement: driver.image" in replace, replace
    cli.ok("stack", "apply", "app", "-p", "image=httpd", "--wait")
    assert "t0ps3cret-value" not in cli.ok("stack", "show", "app", "-o", "json").out
    assert "t0ps3cret-value" not in cli.ok("stack", "resources", "app", "-o", "json").out
    cli.ok("stack", "check", "app", "--wait")
    cli.ok("stack", "converge", "app", "--wait")
    events = cli.json("stack", "events", "app")
    assert {e["action"] for e in events} >= {"apply", "create", "replace", "check", "converge"}
    state = tmp_path / "state.json"
    state.write_text(cli.ok("stack", "abandon", "app", "-o", "json").out)
    assert api.get("/stacks/app").status_code == 404
    cli.ok("stack", "adopt", "app", str(path), "--env", "dev", "--from", str(state), "-p", "token=t0ps3cret-value",
           "-p", "image=httpd", "--wait")
    assert {c["action"] for c in cli.json("stack", "plan", "app")["changes"]} == {"no-op"}
    cli.ok("stack", "delete", "app", "--wait")
    assert api.get("/stacks/app").status_code == 404

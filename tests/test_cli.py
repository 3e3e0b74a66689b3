"""The ``armillary`` client commands, run as subprocesses against a real ``armillary serve`` subprocess.

One server (its own SQLite in a temporary data directory) serves the whole module; each test
uses its own environment names so tests do not see each other's objects. What a test only needs
as a starting point is made through the HTTP API directly (one CLI process costs a few tenths of
a second); what it checks is always done with the command.

Every command runs as the server's admin, signed in once per module with ``armillary login`` (see
tests/support/cli.py); the direct HTTP calls send the token that login stored.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import bearer
from tests.support.cli import Cli, Server, serve

UUID = re.compile(r"request id: ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("cli-server")) as running:
        yield running


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    return Cli(server.url, tmp_path, server.config_dir)


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    """For setting up what a test starts from."""
    with httpx.Client(base_url=server.url + "/api/v1", timeout=30, headers=bearer(server.token)) as client:
        yield client


def make(api: httpx.Client, path: str, body: dict) -> dict:
    response = api.post(path, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def env_with_simulator(api: httpx.Client, env: str, hypervisor: str) -> None:
    make(api, "/environments", {"name": env})
    make(api, "/hypervisors", {"name": hypervisor, "environment": env, "driver": "simulated"})


def systems(api: httpx.Client, *items: dict) -> None:
    response = api.post("/systems/import", json={"items": list(items)})
    assert response.status_code == 201, response.text


# ---------------------------------------------------------------- environments


def test_environment_create_show_update_delete(cli: Cli, api: httpx.Client) -> None:
    created = cli.json(
        "env",
        "create",
        "envcrud",
        "--description",
        "Development",
        "--var",
        "ntp=pool.ntp.org",
        "--var",
        "retries=3",
        "--var",
        "debug=false",
    )
    assert created["name"] == "envcrud" and created["description"] == "Development"
    assert created["variables"] == {"ntp": "pool.ntp.org", "retries": 3, "debug": False}

    table = cli.ok("env", "show", "envcrud")  # by name, as a table
    assert re.search(r"description\s+Development", table.out) and "retries: 3" in table.out

    updated = cli.json(
        "env", "update", "envcrud", "--description", "Dev", "--var", "retries=5", "--unset-var", "debug"
    )
    assert updated["description"] == "Dev"
    assert updated["variables"] == {"ntp": "pool.ntp.org", "retries": 5}  # merged, not replaced
    assert updated["version"] > created["version"]

    assert re.search(r"^\s*\d+\s+envcrud\s+Dev\b", cli.ok("env", "list").out, re.MULTILINE)

    deleted = cli.ok("env", "delete", str(created["id"]))  # by id
    assert f"Deleted environment {created['id']}" in deleted.out
    assert api.get("/environments/envcrud").status_code == 404
    gone = cli("env", "show", "envcrud")
    assert gone.code == 1 and "no environment 'envcrud'" in gone.err and gone.out == ""


def test_output_format_before_or_after_the_command(cli: Cli, api: httpx.Client) -> None:
    make(api, "/environments", {"name": "envfmt"})
    assert cli.ok("--output", "json", "env", "show", "envfmt").json()["name"] == "envfmt"
    # After the command, and then it wins over the global one.
    assert cli.ok("-o", "yaml", "env", "show", "envfmt", "-o", "json").json()["name"] == "envfmt"
    as_yaml = cli.ok("-o", "yaml", "env", "list").yaml()
    assert "envfmt" in [e["name"] for e in as_yaml["items"]] and as_yaml["next"] is None


def test_environment_from_a_yaml_file_sent_as_is(cli: Cli, tmp_path: Path) -> None:
    doc = write(
        tmp_path / "env.yaml", "name: envfile\ndescription: From a file\nvariables: {region: eu, zones: 3}\n"
    )
    created = cli.json("env", "create", "--file", str(doc))
    assert created["description"] == "From a file" and created["variables"] == {"region": "eu", "zones": 3}
    patch = write(tmp_path / "patch.json", json.dumps({"locked": True, "lock_reason": "freeze"}))
    assert cli.json("env", "update", "envfile", "--file", str(patch))["lock_reason"] == "freeze"
    bad = write(tmp_path / "bad.yaml", "name: envfile2\ncolour: red\n")
    refused = cli("env", "create", "-f", str(bad))
    assert refused.code == 1 and "colour" in refused.err and "unknown field" in refused.err


# ---------------------------------------------------------------- hypervisors, types, groups


def test_hypervisor_create_show_update_delete(cli: Cli, api: httpx.Client) -> None:
    make(api, "/environments", {"name": "hvenv"})
    created = cli.json(
        "hypervisor",
        "create",
        "hv1",
        "--env",
        "hvenv",
        "--driver",
        "simulated",
        "--config",
        "latency_ms=5",
        "--config",
        "capacity=3",
        "--config",
        "fail_at=[create]",
        "-d",
        "a simulator",
    )
    assert created["environment"]["name"] == "hvenv" and created["driver"] == "simulated"
    assert created["config"] == {"latency_ms": 5, "capacity": 3, "fail_at": ["create"]}  # YAML scalars typed

    updated = cli.json(
        "hypervisor",
        "update",
        "hv1",
        "--config",
        "capacity=10",
        "--unset-config",
        "fail_at",
        "--name",
        "hv1b",
    )
    assert updated["name"] == "hv1b" and updated["config"] == {"latency_ms": 5, "capacity": 10}
    assert re.search(r"hv1b\s+hvenv\s+simulated", cli.ok("hypervisor", "list", "--env", "hvenv").out)
    assert cli.json("hypervisor", "show", str(created["id"]))["description"] == "a simulator"

    cli.ok("hypervisor", "delete", "hv1b")
    assert api.get("/hypervisors/hv1b").status_code == 404


def test_hypervisor_secrets_are_not_printed(cli: Cli, api: httpx.Client) -> None:
    make(api, "/environments", {"name": "awsenv"})
    created = cli.ok(
        "hypervisor",
        "create",
        "ec2",
        "--env",
        "awsenv",
        "--driver",
        "aws",
        "--config",
        "region=eu-west-1",
        "--config",
        "access_key_id=AKIA1",
        "--config",
        "secret_access_key=s3cr3t-value",
    )
    assert "s3cr3t-value" not in created.out and re.search(r"secrets_set\s+secret_access_key", created.out)
    # Merging plain settings keeps the stored secret; --unset-config removes it.
    kept = cli.json("hypervisor", "update", "ec2", "--config", "region=us-east-1")
    assert kept["config"]["region"] == "us-east-1" and kept["secrets_set"] == ["secret_access_key"]
    removed = cli.json("hypervisor", "update", "ec2", "--unset-config", "secret_access_key",
                       "--unset-config", "access_key_id")
    assert removed["secrets_set"] == [] and "access_key_id" not in removed["config"]


def test_type_create_show_update_delete(cli: Cli, api: httpx.Client, tmp_path: Path) -> None:
    spec = write(tmp_path / "spec.yaml", "scripts:\n  - name: install\n    inline: echo hi\n")
    created = cli.json(
        "type",
        "create",
        "typecrud",
        "--provisioner",
        "script",
        "--spec-file",
        str(spec),
        "--var",
        "port=6379",
    )
    assert created["provisioner"] == {
        "kind": "script",
        "spec": {"scripts": [{"name": "install", "inline": "echo hi"}]},
    }
    assert created["variables"] == {"port": 6379}
    assert re.search(r"typecrud\s+script", cli.ok("type", "list").out)

    updated = cli.json("type", "update", "typecrud", "--var", "maxmemory=1G", "-d", "cache")
    assert updated["variables"] == {"port": 6379, "maxmemory": "1G"} and updated["description"] == "cache"
    assert updated["provisioner"]["spec"] == created["provisioner"]["spec"]  # untouched

    cli.ok("type", "delete", "typecrud")
    assert api.get("/types/typecrud").status_code == 404


def test_group_create_members_update_delete(cli: Cli, api: httpx.Client) -> None:
    make(api, "/environments", {"name": "grpenv"})
    systems(
        api,
        {"hostname": "g1", "environment": "grpenv", "labels": {"tier": "front"}},
        {"hostname": "g2", "environment": "grpenv", "labels": {"tier": "back"}},
    )
    created = cli.json(
        "group", "create", "front", "--selector", "tier=front", "--var", "log=warn", "--priority", "5"
    )
    assert created["selector"] == {"tier": "front"} and created["priority"] == 5
    assert [s["hostname"] for s in cli.json("group", "systems", "front")["items"]] == ["g1"]

    updated = cli.json("group", "update", "front", "--selector", "tier=back", "--var", "x=1")
    assert updated["selector"] == {"tier": "back"} and updated["variables"] == {"log": "warn", "x": 1}
    assert [s["hostname"] for s in cli.json("group", "systems", "front")["items"]] == ["g2"]
    assert re.search(r"front\s+tier=back\s+5", cli.ok("group", "list").out)

    cli.ok("group", "delete", "front")
    assert api.get("/groups/front").status_code == 404


# ---------------------------------------------------------------- systems


def test_system_create_show_update_delete(cli: Cli, api: httpx.Client) -> None:
    env_with_simulator(api, "sysenv", "syssim")
    make(api, "/types", {"name": "systype"})
    created = cli.json(
        "system",
        "create",
        "web1",
        "--env",
        "sysenv",
        "--hypervisor",
        "syssim",
        "--type",
        "systype",
        "--label",
        "tier=web",
        "--label",
        "cell=c1",
        "--var",
        "workers=4",
        "--cpu",
        "2",
        "--memory",
        "2G",
        "--disk",
        "20G",
        "--user",
        "debian",
        "--address",
        "10.0.0.5",
        "--prop",
        "image=debian-12",
    )
    assert created["hostname"] == "web1" and created["state"] == "defined"
    assert created["environment"]["name"] == "sysenv" and created["hypervisor"]["name"] == "syssim"
    assert created["type"]["name"] == "systype"
    assert (
        created["machine"]["cpu"] == 2
        and created["machine"]["memory"] == 2048
        and created["machine"]["disk"] == 20
    )
    assert created["machine"]["addresses"] == ["10.0.0.5"] and created["machine"]["user"] == "debian"
    assert created["driver"] == {"image": "debian-12"}
    assert created["labels"] == {"tier": "web", "cell": "c1"} and created["variables"] == {"workers": 4}

    shown = cli.ok("system", "show", "web1")  # by hostname
    assert re.search(r"hypervisor\s+syssim", shown.out) and re.search(r"state\s+defined", shown.out)
    assert cli.json("system", "show", str(created["id"]))["hostname"] == "web1"

    updated = cli.json(
        "system",
        "update",
        "web1",
        "--label",
        "cell=c2",
        "--unset-label",
        "tier",
        "--var",
        "debug=true",
        "--memory",
        "4G",
        "--hostname",
        "web1b",
    )
    assert updated["hostname"] == "web1b" and updated["labels"] == {"cell": "c2"}
    assert updated["variables"] == {"workers": 4, "debug": True}
    assert updated["machine"]["memory"] == 4096 and updated["machine"]["cpu"] == 2  # the rest is kept

    cli.ok("system", "delete", "web1b")
    assert api.get(f"/systems/{created['id']}").status_code == 404


def test_system_list_filters(cli: Cli, api: httpx.Client) -> None:
    env_with_simulator(api, "fltenv", "fltsim")
    make(api, "/environments", {"name": "fltother"})
    make(api, "/types", {"name": "flttype"})
    systems(
        api,
        {
            "hostname": "alpha1",
            "environment": "fltenv",
            "hypervisor": "fltsim",
            "type": "flttype",
            "labels": {"tier": "web", "cell": "c1"},
        },
        {
            "hostname": "alpha2",
            "environment": "fltenv",
            "type": "flttype",
            "labels": {"tier": "web", "cell": "c2"},
        },
        {"hostname": "beta1", "environment": "fltenv", "hypervisor": "fltsim", "labels": {"tier": "db"}},
        {"hostname": "alpha3", "environment": "fltother", "labels": {"tier": "web"}},
        {"hostname": "beta2", "environment": "fltother"},
    )

    def hostnames(*filters: str) -> list[str]:
        return [s["hostname"] for s in cli.json("system", "list", *filters)["items"]]

    # Each query needs every one of its filters to give the expected answer.
    assert hostnames("--env", "fltenv", "--label", "tier=web") == ["alpha1", "alpha2"]
    assert hostnames("--label", "tier=web", "--label", "cell=c2") == ["alpha2"]
    assert hostnames("--q", "alpha", "--env", "fltother") == ["alpha3"]
    assert hostnames("--type", "flttype", "--hypervisor", "fltsim") == ["alpha1"]
    assert hostnames("--env", "fltenv", "--state", "ready") == []
    table = cli.ok("system", "list", "--env", "fltenv").out
    assert re.search(r"alpha1\s+fltenv\s+fltsim\s+flttype\s+defined\s+cell=c1, tier=web", table)
    assert re.search(r"beta1\s+fltenv\s+fltsim\s+-\s+defined\s+tier=db", table)
    assert "alpha3" not in table
    unknown = cli("system", "list", "--env", "nowhere")
    assert unknown.code == 1 and "no environment 'nowhere'" in unknown.err


def test_list_limit_and_all(cli: Cli, api: httpx.Client) -> None:
    make(api, "/environments", {"name": "pagenv"})
    systems(api, *({"hostname": f"page{index}", "environment": "pagenv"} for index in range(5)))
    first = cli.json("system", "list", "--env", "pagenv", "--limit", "2")
    assert [s["hostname"] for s in first["items"]] == ["page0", "page1"] and first["next"]
    every = cli.json("system", "list", "--env", "pagenv", "--limit", "2", "--all")
    assert [s["hostname"] for s in every["items"]] == [f"page{i}" for i in range(5)] and every["next"] is None
    table = cli.ok("system", "list", "--env", "pagenv", "--limit", "2")
    assert "page1" in table.out and "page2" not in table.out and "--all" in table.err
    assert cli("system", "list", "--limit", "1001").code == 2


def test_system_variables_show_values_and_sources(cli: Cli, api: httpx.Client) -> None:
    make(api, "/environments", {"name": "varenv", "variables": {"ntp": "env.example", "level": "info"}})
    assert api.patch("/variables", json={"ntp": "global.example", "owner": "ops"}).status_code == 200
    make(api, "/types", {"name": "vartype", "variables": {"level": "debug"}})
    make(
        api,
        "/systems",
        {"hostname": "var1", "environment": "varenv", "type": "vartype", "variables": {"port": 8080}},
    )
    resolved = cli.json("system", "variables", "var1")["variables"]
    assert resolved["ntp"]["value"] == "env.example"
    assert resolved["ntp"]["source"] == {"level": "environment", "name": "varenv"}
    assert resolved["ntp"]["overrides"] == [{"level": "global", "name": None}]
    assert resolved["level"]["source"]["level"] == "type" and resolved["port"]["value"] == 8080
    assert resolved["owner"]["source"]["level"] == "global"
    table = cli.ok("system", "variables", "var1").out
    assert re.search(r"ntp\s+env\.example\s+environment varenv\s+global", table)
    assert re.search(r"port\s+8080\s+system var1", table)


def test_global_variables_get_set_unset(cli: Cli) -> None:
    after_set = cli.json("variables", "set", "gv_retries=3", "gv_debug=true", "gv_name=web", "gv_zip=0755")
    assert after_set["gv_retries"] == 3 and after_set["gv_debug"] is True and after_set["gv_name"] == "web"
    assert after_set["gv_zip"] == "0755"  # not a YAML 1.1 octal
    assert re.search(r"^gv_retries\s+3\s*$", cli.ok("variables", "get").out, re.MULTILINE)
    assert cli.ok("variables", "get", "gv_name").out == "web\n"
    after_unset = cli.json("variables", "unset", "gv_retries", "gv_debug")
    assert (
        "gv_retries" not in after_unset and "gv_debug" not in after_unset and after_unset["gv_name"] == "web"
    )
    missing = cli("variables", "get", "gv_retries")
    assert missing.code == 1 and "gv_retries" in missing.err


def test_drivers_and_labels(cli: Cli, api: httpx.Client) -> None:
    drivers = {d["name"]: d for d in cli.json("drivers", "list")}
    assert "simulated" in drivers and "config_schema" in drivers["simulated"]
    assert "latency_ms" in cli.ok("drivers", "show", "simulated").out
    make(api, "/environments", {"name": "lblenv"})
    make(api, "/systems", {"hostname": "lbl1", "environment": "lblenv", "labels": {"rack": "r42"}})
    assert {"key": "rack", "value": "r42", "systems": 1} in cli.json("labels", "list", "--key", "rack")


# ---------------------------------------------------------------- import


def test_import_several_files_including_the_seed_shape(cli: Cli, api: httpx.Client, tmp_path: Path) -> None:
    env_with_simulator(api, "dev", "devsim")
    make(api, "/types", {"name": "redis", "provisioner": {"kind": "none"}})
    seed = write(
        tmp_path / "red1.yaml",
        "env: dev\nmachine: {hostname: red1, user: ubuntu, os: ubuntu-12.10}\nsimulated: {image: x}\n"
        "type: redis\n",
    )
    listed = write(
        tmp_path / "web.yaml",
        "- {hostname: web1, environment: dev, labels: {tier: web}}\n"
        "- {hostname: web2, environment: dev, labels: {tier: web}, machine: {cpu: 2}}\n",
    )
    stream = write(
        tmp_path / "db.yaml", "hostname: db1\nenvironment: dev\n---\nhostname: db2\nenvironment: dev\n"
    )
    as_json = write(tmp_path / "cache.json", json.dumps([{"hostname": "cache1", "environment": "dev"}]))

    done = cli.ok("system", "import", str(seed), str(listed), str(stream), str(as_json))
    assert "Imported 6 systems from 4 files" in done.out
    found = {s["hostname"]: s for s in api.get("/systems", params={"environment": "dev"}).json()["items"]}
    assert set(found) == {"red1", "web1", "web2", "db1", "db2", "cache1"}
    red1 = found["red1"]
    assert red1["hypervisor"]["name"] == "devsim" and red1["driver_name"] == "simulated"
    assert red1["driver"] == {"image": "x"} and red1["type"]["name"] == "redis"
    assert red1["machine"]["user"] == "ubuntu" and red1["machine"]["os"] == "ubuntu-12.10"
    assert found["web2"]["machine"]["cpu"] == 2 and found["web1"]["labels"] == {"tier": "web"}

    again = cli("system", "import", "-o", "json", str(as_json))
    assert again.code == 1 and "cache.json" in again.err and "cache1" in again.err


def test_import_reports_the_bad_file_item_and_field(cli: Cli, api: httpx.Client, tmp_path: Path) -> None:
    make(api, "/environments", {"name": "impenv"})
    good = write(
        tmp_path / "good.yaml",
        "- {hostname: imp1, environment: impenv}\n- {hostname: imp2, environment: impenv}\n",
    )
    bad = write(
        tmp_path / "bad.yaml",
        "- {hostname: imp3, environment: impenv}\n"
        "- {hostname: imp4, environment: impenv, machine: {cpu: 0}}\n",
    )
    failed = cli("system", "import", "--batch-size", "2", str(good), str(bad))
    assert failed.code == 1, str(failed)
    assert "bad.yaml, item 2 (imp4)" in failed.err
    assert "machine.cpu" in failed.err and "greater than or equal to 1" in failed.err
    assert "2 of 4 systems created before the failure" in failed.err
    assert UUID.search(failed.err)
    # The first batch stays; the failing batch (imp3 and imp4) is all or nothing.
    hostnames = [s["hostname"] for s in api.get("/systems", params={"environment": "impenv"}).json()["items"]]
    assert hostnames == ["imp1", "imp2"]


def test_import_of_an_unreadable_file_sends_nothing(cli: Cli, api: httpx.Client, tmp_path: Path) -> None:
    make(api, "/environments", {"name": "yamlenv"})
    good = write(tmp_path / "ok.yaml", "{hostname: y1, environment: yamlenv}\n")
    broken = write(tmp_path / "broken.yaml", "hostname: [y2\n")
    failed = cli("system", "import", str(good), str(broken))
    assert failed.code == 1 and "broken.yaml" in failed.err and "not valid YAML" in failed.err
    assert api.get("/systems", params={"environment": "yamlenv"}).json()["items"] == []
    assert cli("system", "import", str(tmp_path / "absent.yaml")).code == 2


# ---------------------------------------------------------------- errors


def test_unknown_environment_prints_the_problem_and_its_request_id(cli: Cli, server: Server) -> None:
    result = cli("system", "create", "lost1", "--env", "nosuchenv")
    assert result.code == 1 and result.out == ""
    assert "Invalid request (422)" in result.err and "no environment 'nosuchenv'" in result.err
    assert "Traceback" not in result.err
    request_id = UUID.search(result.err).group(1)
    # The id printed is the one the server logged for the refused request.
    logged = [r for r in server.log_records() if r.get("request_id") == request_id]
    assert any(r.get("path") == "/api/v1/systems" and r.get("status") == 422 for r in logged), logged


def test_connection_refused_names_the_url(cli: Cli) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, not listening: refused
        result = cli("env", "list", url=closed)
        via_flag = cli("--server", closed, "env", "list", url="http://127.0.0.1:9")
    for run in (result, via_flag):
        assert run.code == 1, str(run)
        assert f"cannot connect to the Armillary server at {closed}: connection refused" in run.err
        assert "Traceback" not in run.err


def test_usage_errors_exit_2(cli: Cli, tmp_path: Path) -> None:
    bad_pair = cli("env", "create", "x", "--var", "novalue")
    assert bad_pair.code == 2 and "--var" in bad_pair.err and "key=value" in bad_pair.err
    doc = write(tmp_path / "e.yaml", "name: x\n")
    both = cli("env", "create", "x", "--file", str(doc))
    assert both.code == 2 and "--file" in both.err
    assert cli("env", "create").code == 2
    assert cli("env", "update", "default").code == 2  # nothing to change

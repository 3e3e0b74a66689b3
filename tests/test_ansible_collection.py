"""The Ansible collection ``armillary.fleet`` (contrib/ansible) with the real Ansible tools against the real app.

``ansible-inventory``, ``ansible-playbook``, ``ansible-galaxy`` and ``ansible-test`` run as subprocesses with
ANSIBLE_COLLECTIONS_PATH at contrib/ansible, against the session's live server (SQLite: the collection is an
HTTP client of the API, which the API tests cover on both databases). The dynamic inventory also drives a
playbook over SSH to real sshd hosts in network namespaces (tests/support/sshhosts.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.jobs import act_and_wait
from tests.support.peers import missing_peer
from tests.support.sshhosts import ssh_host

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / "contrib" / "ansible"
COLLECTION = COLLECTIONS / "ansible_collections" / "armillary" / "fleet"
BIN = Path(sys.executable).parent
TIMEOUT_S = 180

# The collection is an HTTP client: one database is enough here (the API itself is tested on both).
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        missing_peer(f"{name} (ansible-core) is not installed in {BIN}")
    return str(path)


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = TIMEOUT_S,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}\nstdout:\n{result.stdout[-6000:]}"
                             f"\nstderr:\n{result.stderr[-6000:]}")
    return result


@pytest.fixture
def ansible_env(base_url: str, admin_token: str, tmp_path: Path) -> dict[str, str]:
    """The environment the tools run in: the collection on the path, the server and token as a user sets them."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "ARMILLARY_"))}
    env.update(
        HOME=str(home),
        PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
        ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"),
        ANSIBLE_REMOTE_TMP=str(tmp_path / "ansible-remote"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_INVENTORY_UNPARSED_FAILED="1",  # a source that fails to parse fails the command
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        ARMILLARY_URL=base_url,
        ARMILLARY_TOKEN=admin_token,
    )
    return env


# ---------------------------------------------------------------- an inventory to read


def fleet(api: httpx.Client) -> None:
    """Environments dev and prod with variables, a group, a simulated hypervisor in each, types web and db,
    and five systems: web1, web2, db1 in dev (addresses set), web3 and api1 in prod."""
    for env, variables in [("dev", {"colour": "blue", "app-port": 8080}), ("prod", {"colour": "red"})]:
        assert api.post("/environments", json={"name": env, "variables": variables}).status_code == 201
        made = api.post("/hypervisors", json={"name": f"sim-{env}", "environment": env, "driver": "simulated",
                                              "config": {}})
        assert made.status_code == 201, made.text
    for name in ("web", "db"):
        made = api.post("/types", json={"name": name, "variables": {"role_name": name},
                                        "provisioner": {"kind": "script", "spec": {"scripts": [
                                            {"name": "noop", "inline": "true"}]}}})
        assert made.status_code == 201, made.text
    made = api.post("/groups", json={"name": "front", "selector": {"tier": "frontend"},
                                     "variables": {"greeting": "hello front"}})
    assert made.status_code == 201, made.text
    systems = [
        ("web1", "dev", "web", {"tier": "frontend", "zone": "a-1"}, ["10.9.0.11", "10.9.0.12"], {"colour": "green"}),
        ("web2", "dev", "web", {"tier": "frontend"}, ["10.9.0.21"], {}),
        ("db1", "dev", "db", {"tier": "data"}, ["10.9.0.31"], {}),
        ("web3", "prod", "web", {"tier": "frontend"}, [], {}),
        ("api1", "prod", None, {}, [], {}),
    ]
    for hostname, env, type_name, labels, addresses, variables in systems:
        made = api.post("/systems", json={"hostname": hostname, "environment": env, "hypervisor": f"sim-{env}",
                                          "type": type_name, "labels": labels, "variables": variables,
                                          "machine": {"addresses": addresses}})
        assert made.status_code == 201, made.text


def write_source(path: Path, **options: Any) -> Path:
    path.write_text(yaml.safe_dump({"plugin": "armillary.fleet.armillary", **options}, sort_keys=False))
    return path


def plain(value: Any) -> Any:
    """``ansible-inventory --list`` output without its markers of strings that are no templates
    (``{"__ansible_unsafe": "..."}``: what came from the server is never templated)."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def inventory_list(source: Path, env: dict[str, str], *extra: str, raw: bool = False) -> dict[str, Any]:
    out = json.loads(run([tool("ansible-inventory"), "-i", str(source), "--list", *extra], env).stdout)
    return out if raw else plain(out)


def members(listing: dict[str, Any], group: str) -> set[str]:
    return set(listing.get(group, {}).get("hosts", []))


def test_inventory_lists_systems_with_groups_and_hostvars(
    api: httpx.Client, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    fleet(api)
    # A page of two systems: the plugin must follow `next` to see all five.
    source = write_source(tmp_path / "all.armillary.yml", page_size=2, vars_prefix="arm_")
    listing = inventory_list(source, ansible_env)
    hostvars = listing["_meta"]["hostvars"]
    assert set(hostvars) == {"web1", "web2", "db1", "web3", "api1"}
    assert members(listing, "env_dev") == {"web1", "web2", "db1"}
    assert members(listing, "env_prod") == {"web3", "api1"}
    assert members(listing, "type_web") == {"web1", "web2", "web3"}
    assert members(listing, "type_db") == {"db1"}
    assert members(listing, "label_tier_frontend") == {"web1", "web2", "web3"}
    assert members(listing, "label_zone_a_1") == {"web1"}  # '-' is no valid group character

    web1 = hostvars["web1"]
    assert web1["ansible_host"] == "10.9.0.11"  # the first address
    assert web1["armillary_addresses"] == ["10.9.0.11", "10.9.0.12"]
    assert web1["armillary_environment"] == "dev" and web1["armillary_type"] == "web"
    assert web1["armillary_state"] == "defined" and web1["armillary_hypervisor"] == "sim-dev"
    assert web1["armillary_labels"] == {"tier": "frontend", "zone": "a-1"}
    assert web1["armillary_id"] == api.get("/systems/web1").json()["id"]
    # Resolved variables, prefixed: the system's own beats the environment's; group and type ones are there.
    assert web1["arm_colour"] == "green" and hostvars["web2"]["arm_colour"] == "blue"
    assert web1["arm_app_port"] == 8080  # 'app-port' made a valid name
    assert web1["arm_greeting"] == "hello front" and "arm_greeting" not in hostvars["db1"]
    assert web1["arm_role_name"] == "web" and hostvars["db1"]["arm_role_name"] == "db"
    assert hostvars["web3"]["arm_colour"] == "red"
    assert "ansible_host" not in hostvars["web3"] and "colour" not in web1  # no address; prefix applied

    # A variable's value that looks like a template stays text: the server's data is never templated.
    assert api.patch("/systems/web2", json={"variables": {"note": "{{ lookup('pipe', 'id') }}"}}).status_code == 200
    raw = inventory_list(source, ansible_env, raw=True)["_meta"]["hostvars"]["web2"]
    assert raw["arm_note"] == {"__ansible_unsafe": "{{ lookup('pipe', 'id') }}"}, raw

    graph = run([tool("ansible-inventory"), "-i", str(source), "--graph"], ansible_env).stdout
    assert "|--@env_prod:\n  |  |--web3\n  |  |--api1\n" in graph, graph
    assert "|--@label_tier_frontend:\n  |  |--web1\n  |  |--web2\n  |  |--web3\n" in graph, graph


def test_inventory_filters(api: httpx.Client, ansible_env: dict[str, str], tmp_path: Path) -> None:
    fleet(api)
    assert act_and_wait(api, "web2", "create")["status"] == "succeeded"

    def hosts(**options: Any) -> set[str]:
        source = write_source(tmp_path / "f.armillary.yml", **options)
        return set(inventory_list(source, ansible_env)["_meta"]["hostvars"])

    assert hosts(environments=["prod"]) == {"web3", "api1"}
    assert hosts(environments=["prod", "dev"]) == {"web1", "web2", "db1", "web3", "api1"}
    assert hosts(labels={"tier": "frontend"}) == {"web1", "web2", "web3"}
    assert hosts(labels={"tier": "frontend"}, environments=["dev"]) == {"web1", "web2"}
    assert hosts(states=["created"]) == {"web2"}
    assert hosts(types=["db"]) == {"db1"}
    assert hosts(types=["web"], states=["defined"], environments=["dev"]) == {"web1"}

    # One hostname in two environments: an error saying what to do, or hosts named with their environment.
    made = api.post("/systems", json={"hostname": "web1", "environment": "prod", "hypervisor": "sim-prod"})
    assert made.status_code == 201, made.text
    failed = run([tool("ansible-inventory"), "-i", str(write_source(tmp_path / "f.armillary.yml")), "--list"],
                 ansible_env, check=False)
    assert failed.returncode != 0 and "hostname_with_environment" in failed.stderr, failed.stderr
    assert hosts(hostname_with_environment=True, labels={"tier": "frontend"}) == {"web1.dev", "web2.dev", "web3.prod"}
    assert "web1.prod" in hosts(hostname_with_environment=True, environments=["prod"])


def test_inventory_constructed_features(api: httpx.Client, ansible_env: dict[str, str], tmp_path: Path) -> None:
    fleet(api)
    source = write_source(
        tmp_path / "c.armillary.yml",
        compose={"paint": "colour | upper", "ssh_port": "2200 + armillary_id"},
        keyed_groups=[{"key": "armillary_labels.tier", "prefix": "tier"},
                      {"key": "armillary_environment", "prefix": "in", "separator": "-"}],
        groups={"painted_green": "colour == 'green'", "on_dev_sim": "armillary_hypervisor == 'sim-dev'"},
    )
    listing = inventory_list(source, ansible_env)
    hostvars = listing["_meta"]["hostvars"]
    assert hostvars["web1"]["paint"] == "GREEN" and hostvars["web3"]["paint"] == "RED"
    assert hostvars["db1"]["ssh_port"] == 2200 + hostvars["db1"]["armillary_id"]
    assert members(listing, "tier_frontend") == {"web1", "web2", "web3"}
    assert members(listing, "tier_data") == {"db1"}
    assert members(listing, "in_prod") == {"web3", "api1"}  # '-' is replaced in group names
    assert members(listing, "painted_green") == {"web1"}
    assert members(listing, "on_dev_sim") == {"web1", "web2", "db1"}

    # strict: an expression that cannot be evaluated fails the inventory; without it, it is skipped.
    broken = {"compose": {"x": "no_such_variable.attr"}}
    assert "x" not in inventory_list(write_source(tmp_path / "s.armillary.yml", **broken), ansible_env)[
        "_meta"]["hostvars"]["web1"]
    failed = run([tool("ansible-inventory"), "-i", str(write_source(tmp_path / "s.armillary.yml", strict=True,
                                                                        **broken)), "--list"],
                 ansible_env, check=False)
    assert failed.returncode != 0 and "no_such_variable" in failed.stderr, failed.stderr


def test_inventory_cache_and_errors(api: httpx.Client, ansible_env: dict[str, str], tmp_path: Path) -> None:
    fleet(api)
    cache_dir = tmp_path / "cache"
    source = write_source(tmp_path / "cached.armillary.yml", cache=True, cache_plugin="ansible.builtin.jsonfile",
                          cache_connection=str(cache_dir), cache_timeout=3600)
    assert "api1" in inventory_list(source, ansible_env)["_meta"]["hostvars"]
    assert list(cache_dir.iterdir()), "nothing was cached"
    assert api.delete("/systems/api1").status_code == 204
    assert "api1" in inventory_list(source, ansible_env)["_meta"]["hostvars"]  # from the cache
    assert "api1" not in inventory_list(source, ansible_env, "--flush-cache")["_meta"]["hostvars"]

    # The token and URL come from the file as well; a wrong token is a failure naming the answer.
    env = {k: v for k, v in ansible_env.items() if k not in ("ARMILLARY_URL", "ARMILLARY_TOKEN")}
    good = write_source(tmp_path / "file.armillary.yml", url=ansible_env["ARMILLARY_URL"],
                        token=ansible_env["ARMILLARY_TOKEN"], environments=["prod"])
    assert set(inventory_list(good, env)["_meta"]["hostvars"]) == {"web3"}
    bad = write_source(tmp_path / "bad.armillary.yml", url=ansible_env["ARMILLARY_URL"], token="not-a-token")
    failed = run([tool("ansible-inventory"), "-i", str(bad), "--list"], env, check=False)
    assert failed.returncode != 0 and "answered 401" in failed.stderr, failed.stderr
    # A file whose name does not say armillary is not taken for one.
    other = write_source(tmp_path / "hosts.yml", environments=["prod"])
    failed = run([tool("ansible-inventory"), "-i", str(other), "--list"], ansible_env, check=False)
    assert failed.returncode != 0 and "armillary" in failed.stderr, failed.stderr


# ---------------------------------------------------------------- the modules


def playbook(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump([{"name": "armillary", "hosts": "localhost", "connection": "local",
                                     "gather_facts": False, "tasks": tasks}], sort_keys=False))
    return path


def play(book: Path, env: dict[str, str], *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``ansible-playbook`` of a play on localhost (no inventory source)."""
    return run([tool("ansible-playbook"), "-i", "localhost,", *extra, str(book)], env, check=check)


def recap(output: str, host: str = "localhost") -> dict[str, int]:
    match = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", output.split("PLAY RECAP", 1)[1], re.MULTILINE)
    assert match, output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def define_web1(**overrides: Any) -> dict[str, Any]:
    args = {"hostname": "web1", "environment": "dev", "hypervisor": "sim", "type": "web",
            "machine": {"cpu": 2, "memory": 2048}, "labels": {"tier": "frontend"},
            "variables": {"app_port": 8080}}
    args.update(overrides)
    return {"name": "define web1", "armillary.fleet.system": args}


def module_setup(api: httpx.Client, config: dict[str, Any] | None = None) -> None:
    assert api.post("/environments", json={"name": "dev"}).status_code == 201
    made = api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                          "config": config or {}})
    assert made.status_code == 201, made.text
    made = api.post("/types", json={"name": "web", "provisioner": {"kind": "script", "spec": {
        "scripts": [{"name": "noop", "inline": "true"}]}}})
    assert made.status_code == 201, made.text


def test_system_module_is_idempotent_and_checks(
    api: httpx.Client, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    module_setup(api)
    book = playbook(tmp_path / "define.yml", [define_web1()])
    first = play(book, ansible_env).stdout
    assert recap(first)["changed"] == 1, first
    system = api.get("/systems/web1").json()
    assert system["labels"] == {"tier": "frontend"} and system["variables"] == {"app_port": 8080}
    assert system["machine"]["cpu"] == 2 and system["machine"]["memory"] == 2048
    assert system["hypervisor"]["name"] == "sim" and system["type"]["name"] == "web"
    assert system["state"] == "defined"

    again = play(book, ansible_env).stdout
    assert recap(again)["changed"] == 0, again
    assert api.get("/systems/web1").json()["version"] == system["version"]

    # Check mode: a change is reported (with its diff) and nothing is changed.
    changed = playbook(tmp_path / "change.yml", [define_web1(machine={"cpu": 4}, labels={"tier": "backend"})])
    checked = play(changed, ansible_env, "--check", "--diff").stdout
    assert recap(checked)["changed"] == 1, checked
    assert re.search(r'^-\s+"tier": "frontend"', checked, re.MULTILINE) and re.search(r'^\+\s+"tier": "backend"',
                                                                              checked, re.MULTILINE), checked
    assert api.get("/systems/web1").json()["version"] == system["version"]
    staged_check = playbook(tmp_path / "stage-check.yml", [define_web1(state="staged")])
    assert recap(play(staged_check, ansible_env, "--check").stdout)["changed"] == 1
    assert api.get("/systems/web1").json()["state"] == "defined"
    assert api.get("/jobs").json()["items"] == []

    # Really: only the machine's cpu changes (memory, given before, stays).
    play(changed, ansible_env)
    system = api.get("/systems/web1").json()
    assert system["machine"]["cpu"] == 4 and system["machine"]["memory"] == 2048
    assert system["labels"] == {"tier": "backend"}

    # staged creates and provisions, then nothing more; absent destroys and forgets.
    staged = playbook(tmp_path / "stage.yml", [define_web1(machine={"cpu": 4}, labels={"tier": "backend"},
                                                           state="staged")])
    assert recap(play(staged, ansible_env).stdout)["changed"] == 1
    assert api.get("/systems/web1").json()["state"] == "ready"
    assert [j["action"] for j in api.get("/jobs").json()["items"]] == ["stage"]
    assert recap(play(staged, ansible_env).stdout)["changed"] == 0
    gone = playbook(tmp_path / "absent.yml", [{"armillary.fleet.system": {"hostname": "web1", "environment": "dev",
                                                                         "state": "absent"}}])
    assert recap(play(gone, ansible_env).stdout)["changed"] == 1
    assert api.get("/systems/web1").status_code == 404
    assert [j["action"] for j in api.get("/jobs").json()["items"]] == ["destroy", "stage"]
    assert recap(play(gone, ansible_env).stdout)["changed"] == 0


def test_action_module_runs_and_waits(api: httpx.Client, ansible_env: dict[str, str], tmp_path: Path) -> None:
    module_setup(api)
    book = playbook(tmp_path / "act.yml", [
        define_web1(),
        {"name": "stage it", "armillary.fleet.action": {"system": "web1", "environment": "dev", "action": "stage"},
         "register": "staged"},
        {"ansible.builtin.assert": {"that": ["staged.job.status == 'succeeded'", "staged.system.state == 'ready'",
                                             "staged is changed"]}},
        {"name": "stop it", "armillary.fleet.action": {"system": "{{ staged.system.id }}", "action": "stop"}},
    ])
    out = play(book, ansible_env).stdout
    assert recap(out)["failed"] == 0, out
    assert api.get("/systems/web1").json()["state"] == "stopped"
    assert [j["action"] for j in api.get("/jobs").json()["items"]] == ["stop", "stage"]

    # A refused action fails the task with the server's reason; nothing runs.
    refused = playbook(tmp_path / "refused.yml", [
        {"armillary.fleet.action": {"system": "web1", "action": "provision"}}])
    failed = play(refused, ansible_env, check=False)
    assert failed.returncode != 0 and "answered 409" in failed.stdout and "stopped" in failed.stdout, failed.stdout
    assert len(api.get("/jobs").json()["items"]) == 2


def test_action_module_fails_with_the_jobs_error(
    api: httpx.Client, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    module_setup(api, config={"fail_at": ["create"]})
    book = playbook(tmp_path / "fail.yml", [
        define_web1(),
        {"armillary.fleet.action": {"system": "web1", "environment": "dev", "action": "create",
                                    "poll_interval": 0.2}},
    ])
    failed = play(book, ansible_env, check=False)
    job = api.get("/jobs").json()["items"][0]
    assert job["status"] == "failed" and job["error"], job
    assert failed.returncode == 2, failed.stdout
    assert f"job {job['id']} (create of web1) failed: " in failed.stdout, failed.stdout
    assert job["error"].splitlines()[0][:60] in failed.stdout, (job["error"], failed.stdout)


# ---------------------------------------------------------------- a play over the dynamic inventory, by SSH


def test_playbook_over_the_dynamic_inventory_reaches_the_ssh_hosts(
    api: httpx.Client, ansible_env: dict[str, str], tmp_path: Path
) -> None:
    if not os.access("/usr/bin/python3", os.X_OK):
        missing_peer("/usr/bin/python3 (the Python Ansible runs modules with on the SSH hosts)")
    with ssh_host(tmp_path / "a") as first, ssh_host(tmp_path / "b") as second:
        hosts = {"node1": first, "node2": second}
        assert api.post("/environments", json={"name": "lab", "variables": {"motd": "hi"}}).status_code == 201
        made = api.post("/hypervisors", json={"name": "metal", "environment": "lab", "driver": "ssh", "config": {
            "private_key": first.private_key_pem, "connect_timeout": 5,
            "allowed_hosts": [first.address, second.address]}})
        assert made.status_code == 201, made.text
        # Both hosts let the first host's client key in.
        (second.directory / "authorized_keys").write_text(first.public_key + "\n")
        for name, host in hosts.items():
            made = api.post("/systems", json={"hostname": name, "environment": "lab", "hypervisor": "metal",
                                              "labels": {"role": "node"}, "variables": {"slot": name[-1]},
                                              "driver": {"host": host.address, "port": host.port}})
            assert made.status_code == 201, made.text
            job = act_and_wait(api, name, "create")  # verifies the machine and records its address
            assert job["status"] == "succeeded", job
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(first.known_hosts_path.read_text() + second.known_hosts_path.read_text())

        source = write_source(tmp_path / "lab.armillary.yml", environments=["lab"], states=["created"],
                              compose={"ansible_user": "'root'"})
        book = tmp_path / "site.yml"
        book.write_text(yaml.safe_dump([{
            "name": "over SSH",
            "hosts": "label_role_node",
            "gather_facts": False,
            "vars": {
                "ansible_ssh_private_key_file": str(first.private_key_path),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes "
                                           "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_remote_tmp": str(tmp_path / "remote-tmp"),
            },
            "tasks": [
                {"name": "hostname", "ansible.builtin.command": "hostname", "register": "name",
                 "changed_when": False},
                {"name": "where am I", "ansible.builtin.command": "ip -4 -o addr show", "register": "addrs",
                 "changed_when": False},
                {"name": "mark", "ansible.builtin.copy": {
                    "dest": "{{ out }}/{{ inventory_hostname }}", "mode": "0644",
                    "content": "{{ name.stdout }}|{{ motd }}|{{ slot }}|{{ ansible_host }}|{{ addrs.stdout }}\n"},
                 "vars": {"out": "{{ scratch[inventory_hostname] }}"}},
            ],
        }], sort_keys=False))
        scratch = {name: str(host.scratch) for name, host in hosts.items()}
        out = run([tool("ansible-playbook"), "-i", str(source), str(book), "-e", json.dumps({"scratch": scratch})],
                  ansible_env).stdout
        for name, host in hosts.items():
            assert recap(out, name) == {"ok": 3, "changed": 1, "unreachable": 0, "failed": 0, "skipped": 0,
                                        "rescued": 0, "ignored": 0}, out
            written = (host.scratch / name).read_text().split("|")
            assert written[1:4] == ["hi", name[-1], host.address], written
            assert written[0] == socket.gethostname()  # the namespaces share this machine's hostname
            # The commands ran in that host's network namespace: its address is there, the other's is not.
            other = second if host is first else first
            assert f"inet {host.address}/" in written[4] and f"inet {other.address}/" not in written[4], written
        log = first.log_path.read_text() + second.log_path.read_text()
        assert log.count("Accepted publickey for root") >= 2, log[-2000:]


# ---------------------------------------------------------------- building and checking the collection


def test_galaxy_build_makes_a_tarball(ansible_env: dict[str, str], tmp_path: Path) -> None:
    out = run([tool("ansible-galaxy"), "collection", "build", str(COLLECTION), "--output-path", str(tmp_path)],
              ansible_env).stdout
    tarball = tmp_path / "armillary-fleet-0.1.0.tar.gz"
    assert tarball.exists(), out
    with tarfile.open(tarball) as archive:
        names = set(archive.getnames())
        manifest = json.load(archive.extractfile("MANIFEST.json"))
    assert {"plugins/inventory/armillary.py", "plugins/modules/system.py", "plugins/modules/action.py",
            "plugins/module_utils/api.py", "plugins/doc_fragments/connection.py", "README.md",
            "meta/runtime.yml"} <= names, names
    assert manifest["collection_info"]["namespace"] == "armillary" and manifest["collection_info"]["name"] == "fleet"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".tar.gz")], names

    # Installed from the tarball, the plugins are found and documented.
    installed = tmp_path / "installed"
    run([tool("ansible-galaxy"), "collection", "install", "--force", str(tarball), "-p", str(installed)], ansible_env)
    env = dict(ansible_env, ANSIBLE_COLLECTIONS_PATH=str(installed))
    for kind, name in [("inventory", "armillary.fleet.armillary"), ("module", "armillary.fleet.system"),
                       ("module", "armillary.fleet.action")]:
        doc = json.loads(run([tool("ansible-doc"), "-t", kind, "--json", name], env).stdout)
        assert doc[name]["doc"]["short_description"], doc


# ansible-test sanity runs each test in a virtual environment of its own, bootstrapped with pip's get-pip.py
# from ci-files.testing.ansible.com, which is not reachable here. In its place (the file ansible-test looks
# for in its cache) this bootstraps pip with the interpreter's own ensurepip, then installs what ansible-test
# asks for with pip from the configured package index. The venvs are kept under one directory between runs.
GET_PIP_SHIM = """\
import subprocess, sys
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
"""
SANITY_TESTS = ["action-plugin-docs", "ansible-doc", "compile", "empty-init", "ignores", "import", "line-endings",
                "no-assert", "no-smart-quotes", "pep8", "pylint", "replace-urlopen", "runtime-metadata", "shebang",
                "symlinks", "use-argspec-type-path", "use-compat-six", "validate-modules", "yamllint"]


def test_ansible_test_sanity(ansible_env: dict[str, str], tmp_path: Path) -> None:
    """``ansible-test sanity --python 3.11`` (the local Python) on a copy of the collection: ansible-test works
    in ``ansible_collections/<ns>/<name>`` and writes tests/output there."""
    copy = tmp_path / "ansible_collections" / "armillary" / "fleet"
    shutil.copytree(COLLECTION, copy, ignore=shutil.ignore_patterns("__pycache__", "output", "*.tar.gz"))
    home = Path(tempfile.gettempdir()) / "armillary-ansible-test-home"
    cache = home / ".ansible" / "test" / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "get_pip_24_2.py").write_text(GET_PIP_SHIM)  # the pip ansible-test 2.19 bootstraps
    env = dict(ansible_env, HOME=str(home), ANSIBLE_COLLECTIONS_PATH=str(tmp_path))
    available = set(run([tool("ansible-test"), "sanity", "--list-tests", "--python", "3.11"], env,
                        cwd=copy).stdout.split())
    tests = [t for t in SANITY_TESTS if t in available]
    assert {"compile", "validate-modules", "yamllint", "ansible-doc", "import"} <= set(tests), available
    result = run([tool("ansible-test"), "sanity", "--python", "3.11", "--color", "no",
                  *[arg for t in tests for arg in ("--test", t)]], env, cwd=copy, check=False, timeout=900)
    output = result.stdout + result.stderr
    if result.returncode != 0 and "ERROR: Found" not in output and re.search(
            r"(pip|requirements|Could not find a version|No matching distribution)", output):
        missing_peer(f"ansible-test could not install its sanity requirements: {output.strip()[-800:]}")
    assert result.returncode == 0, output[-8000:]
    ran = set(re.findall(r'Running sanity test "([\w-]+)"', output))
    assert ran == set(tests), (ran, tests)

"""Audits and remediation against real machines: five SSH hosts (sshd in network namespaces,
``tests/support/sshhosts.py``) on the ssh driver, checked by a command, by Ansible in check mode and by
facts, and repaired by a script and by the same playbook applied for real.

s1 is as it should be; s2's config file is edited behind Armillary's back; s3's service (a stand-in
process with a pid file) is stopped; s4 is unreachable (its sshd stopped after it was created); s5's config
is edited and its fix fails (its playbook run is refused by a variable, as a read-only partition would).

Runs once, on SQLite: the SSH hosts and Ansible are the peers here, and the database side of the same
scenarios runs on both backends in ``tests/test_audits.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from tests.support.audits import run_audit, statuses, wait_run
from tests.support.jobs import act_and_wait
from tests.support.peers import missing_peer
from tests.support.sshhosts import SshHost, ssh_host

# The SSH scenario runs once, on SQLite; tests/test_audits.py covers both databases.
pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: the fix is refused here
      ansible.builtin.fail:
        msg: "the config partition is read-only"
      when: (fix_blocked | default(false)) and not ansible_check_mode
    - name: write the config
      ansible.builtin.copy:
        dest: "{{ conf }}"
        content: "mode=good\\n"
        mode: "0644"
"""
START_SERVICE = 'setsid sleep 600 </dev/null >/dev/null 2>&1 & echo $! > "$pidfile"\n'


@pytest.fixture
def hosts(tmp_path: Path) -> list[SshHost]:
    if shutil.which("ansible-playbook") is None and not (Path(sys.executable).parent / "ansible-playbook").exists():
        missing_peer("ansible-playbook (ansible-core) is not installed")
    with ExitStack() as stack:
        made = [stack.enter_context(ssh_host(tmp_path / f"s{i}")) for i in range(1, 6)]
        for host in made[1:]:  # one key for the hypervisor: the first host's, authorized everywhere
            (host.directory / "authorized_keys").write_text(made[0].public_key + "\n")
        yield made


def start_service(host: SshHost) -> subprocess.Popen:
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    (host.scratch / "svc.pid").write_text(f"{process.pid}\n")
    return process


def test_checks_find_exactly_the_drifted_hosts_and_fixes_repair_them(
        api: httpx.Client, backend: str, hosts: list[SshHost], tmp_path: Path) -> None:
    s1, s2, s3, s4, s5 = hosts
    assert api.post("/environments", json={"name": "dev", "variables": {"os_id": "debian"}}).status_code == 201
    made = api.post("/hypervisors", json={"name": "metal", "environment": "dev", "driver": "ssh", "config": {
        "private_key": s1.private_key_pem, "connect_timeout": 3, "allowed_hosts": [h.address for h in hosts]}})
    assert made.status_code == 201, made.text
    services = []
    for n, host in enumerate(hosts, 1):
        (host.scratch / "app.conf").write_text("mode=good\n")
        services.append(start_service(host))
        variables = {"conf": str(host.scratch / "app.conf"), "pidfile": str(host.scratch / "svc.pid")}
        if host is s5:
            variables["fix_blocked"] = True
        system = api.post("/systems", json={"hostname": f"s{n}", "environment": "dev", "hypervisor": "metal",
                                             "labels": {"fleet": "ssh"}, "variables": variables,
                                             "driver": {"host": host.address, "port": host.port}})
        assert system.status_code == 201, system.text
        assert act_and_wait(api, f"s{n}", "create")["status"] == "succeeded"
    try:
        # Behind Armillary's back:
        (s2.scratch / "app.conf").write_text("mode=debug\n")
        (s5.scratch / "app.conf").write_text("mode=debug\n")
        services[2].kill()
        services[2].wait()
        s4.stop()

        remote_tmp = tmp_path / "ansible-tmp"
        remote_tmp.mkdir()
        checks = [
            {"name": "service-up", "kind": "command", "spec": {"command": 'kill -0 "$(cat "$pidfile")"'}},
            {"name": "config", "kind": "ansible", "severity": "high",
             "spec": {"playbook": {"inline": PLAYBOOK}, "remote_tmp": str(remote_tmp)}},
            {"name": "platform", "kind": "facts", "spec": {
                "gather": ["os", "kernel", "ports", "disk"], "write_back": True,
                "expect": ["facts.os.id == vars.os_id", "22 in facts.ports", "facts.disk['/'].used_pct <= 100",
                           "facts.kernel | length > 0"]}},
        ]
        for check in checks:
            assert api.post("/checks", json=check).status_code == 201
        assert api.post("/audits", json={"name": "fleet", "selector": {"labels": {"fleet": "ssh"}},
                                         "checks": ["service-up", "config", "platform"],
                                         "concurrency": 5}).status_code == 201
        run = run_audit(api, "fleet", timeout_s=120)

        def found(check: str) -> dict[str, str]:
            return statuses(api.get("/findings", params={"run": run["id"], "check": check}).json()["items"])

        assert found("service-up") == {"s1": "pass", "s2": "pass", "s3": "fail", "s4": "error", "s5": "pass"}
        assert found("config") == {"s1": "pass", "s2": "fail", "s3": "pass", "s4": "error", "s5": "fail"}
        assert found("platform") == {"s1": "pass", "s2": "pass", "s3": "pass", "s4": "error", "s5": "pass"}
        config_s2 = api.get("/findings", params={"run": run["id"], "check": "config",
                                                 "system": "s2"}).json()["items"][0]
        assert "write the config" in config_s2["summary"]
        assert "changed" in [t["status"] for t in config_s2["evidence"]["tasks"] if t["task"] == "write the config"]
        assert (s2.scratch / "app.conf").read_text() == "mode=debug\n"  # check mode changed nothing
        unreachable = api.get("/findings", params={"run": run["id"], "system": "s4", "check": "service-up"}).json()
        assert unreachable["items"][0]["evidence"]["error"]
        facts = api.get("/findings", params={"run": run["id"], "system": "s1", "check": "platform"}).json()["items"][0]
        assert facts["evidence"]["facts"]["os"]["id"] == "debian" and 22 in facts["evidence"]["facts"]["ports"]
        resolved = api.get("/systems/s1/variables").json()  # the facts, kept as variables under facts.
        assert resolved["precedence"] == ["global", "environment", "group", "type", "facts", "system"]
        assert resolved["variables"]["facts.os"]["value"]["id"] == "debian"
        assert resolved["variables"]["facts.os"]["source"] == {"level": "facts", "name": "audit fleet"}
        assert 22 in resolved["variables"]["facts.ports"]["value"] and "facts.packages" not in resolved["variables"]

        assert api.post("/remediations", json={"name": "config-fix", "check": "config", "kind": "ansible",
                                               "spec": {"playbook": {"inline": PLAYBOOK},
                                                        "remote_tmp": str(remote_tmp)}}).status_code == 201
        assert api.post("/remediations", json={"name": "service-fix", "check": "service-up", "kind": "script",
                                               "spec": {"script": START_SERVICE}}).status_code == 201
        config_run = wait_run(api, api.post("/remediations/config-fix/runs").json()["id"], timeout_s=120)
        assert {r["hostname"]: r["status"] for r in config_run["results"].values()} == {
            "s2": "repaired", "s5": "kicked_out"}
        assert (s2.scratch / "app.conf").read_text() == "mode=good\n"
        service_run = wait_run(api, api.post("/remediations/service-fix/runs").json()["id"], timeout_s=60)
        assert {r["hostname"]: r["status"] for r in service_run["results"].values()} == {"s3": "repaired"}
        assert statuses(api.get("/findings", params={"remediation_run": service_run["id"]}).json()["items"]) == {
            "s3": "pass"}

        queue = api.get("/attention").json()["items"]
        assert [i["system"]["name"] for i in queue] == ["s5"]
        assert "read-only" in queue[0]["reason"]

        # The remediation's re-checks are findings too: the history of s2 shows it fixed.
        history = api.get("/findings", params={"system": "s2", "check": "config"}).json()["items"]
        assert [(f["status"], f["change"]) for f in history] == [("pass", "fixed"), ("fail", "new_failure")]
    finally:
        for process in services:
            process.kill()
            process.wait()

"""A bulk provision with the ansible provisioner: ONE ansible-playbook for the hosts of a batch.

Three real SSH hosts (sshd's in network namespaces, tests/support/sshhosts.py) that accept one client
key, so one ssh hypervisor reaches them all; a type whose inline playbook records, on every host, the
hosts of its play and the run's private temporary directory (one run: the same on every host); each
system has its own ``out`` directory (a system variable), and one system is told to fail (a system
variable the playbook tests).
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from armillary.provisioners.ansible_batch import IDLE_S, Coalescer, Member
from tests.support.jobs import act_and_wait, wait_job
from tests.support.provisioning import setup_ssh_system
from tests.support.sshhosts import SshHost, ssh_host, ssh_peer
from tests.test_provision_ansible import ansible_peer, leftovers, provision_logs

__all__ = ["ansible_peer", "ssh_peer"]  # the fixtures, imported for this module's tests

PLAYBOOK = """\
- name: batch
  hosts: all
  gather_facts: false
  tasks:
    - name: record the run
      ansible.builtin.copy:
        dest: "{{ out }}/run"
        content: "{{ ansible_play_hosts_all | sort | join(',') }} {{ lookup('env', 'ANSIBLE_LOCAL_TEMP') }}\\n"
    - name: own values
      ansible.builtin.copy:
        dest: "{{ out }}/own"
        content: "{{ inventory_hostname }} {{ armillary_hostname }} {{ colour }} {{ release }}\\n"
    - name: fail when told
      ansible.builtin.fail:
        msg: "{{ inventory_hostname }} was told to fail"
      when: fail_here | default(false) | bool
    - name: after
      ansible.builtin.command: "touch {{ out }}/after"
"""


def three_hosts(
    api: httpx.Client, first: SshHost, stack: ExitStack, tmp_path: Path, playbook: str = PLAYBOOK
) -> dict[str, SshHost]:
    """web1 (on ``first``), web2 and web3 (web3 told to fail), of one type running ``playbook``, one
    hypervisor, one label."""
    hosts = {"web1": first}
    for name in ("web2", "web3"):
        host = hosts[name] = stack.enter_context(ssh_host(tmp_path / name))
        (host.directory / "authorized_keys").write_text(first.public_key + "\n")  # one client key
    spec = {"playbook": {"inline": playbook}, "remote_tmp": str(tmp_path / "ansible-tmp"),
            "extra_vars": {"release": "r7"}}
    setup_ssh_system(api, first, {"kind": "ansible", "spec": spec}, labels={"batch": "yes"})
    allowed = {"config": {"allowed_hosts": [h.address for h in hosts.values()]}}
    assert api.patch("/hypervisors/metal", json=allowed).status_code == 200
    for name, host in hosts.items():
        variables = {"out": str(host.scratch), **({"fail_here": True} if name == "web3" else {})}
        if name == "web1":
            assert api.patch("/systems/web1", json={"variables": variables}).status_code == 200
            continue
        made = api.post("/systems", json={
            "hostname": name, "environment": "dev", "hypervisor": "metal", "type": "web",
            "labels": {"role": "web", "batch": "yes"}, "driver": {"host": host.address, "port": host.port},
            "variables": variables,
        })  # fmt: skip
        assert made.status_code == 201, made.text
    return hosts


def bulk(api: httpx.Client, action: str, **body: Any) -> dict[str, Any]:
    started = api.post("/jobs", json={"action": action, "selector": {"labels": {"batch": "yes"}},
                                      "concurrency": 10, **body})  # fmt: skip
    assert started.status_code == 202, started.text
    return wait_job(api, started.json()["id"], timeout_s=180)


def children(api: httpx.Client, parent: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The parent's child jobs by hostname."""
    results = parent["context"]["batch_1"]
    return {host: api.get(f"/jobs/{r['job_id']}").json() for host, r in results.items()}


def test_a_bulk_provision_runs_one_playbook_for_its_hosts(
    api: httpx.Client, ssh_peer: SshHost, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        hosts = three_hosts(api, ssh_peer, stack, tmp_path)
        assert bulk(api, "create")["status"] == "succeeded"

        parent = bulk(api, "provision", on_failure="continue")
        jobs = children(api, parent)
        messages = {name: [e["message"] for e in provision_logs(api, job["id"])]
                    for name, job in jobs.items()}
        assert jobs["web1"]["status"] == "succeeded", (jobs["web1"]["error"], messages["web1"])
        assert jobs["web2"]["status"] == "succeeded", (jobs["web2"]["error"], messages["web2"])
        assert parent["summary"]["hosts"] == {"web1": "succeeded", "web2": "succeeded", "web3": "failed"}

        # ONE run: every host's play had the three hosts, and one ansible-playbook's private temp dir.
        recorded = {name: (host.scratch / "run").read_text() for name, host in hosts.items()}
        assert len(set(recorded.values())) == 1, recorded
        assert recorded["web1"].split()[0] == "web1,web2,web3", recorded
        for name in jobs:
            said = [m for m in messages[name] if m.startswith("running ansible-playbook")]
            assert said == [f"running ansible-playbook on {name}, in one run for 3 systems of this bulk "
                            "job: web1, web2, web3"], messages[name]

        # Each host its own variables (its system's, the spec's extra vars, Armillary's own).
        for name, host in hosts.items():
            assert (host.scratch / "own").read_text() == f"{name} {name} blue r7\n"

        # Each child has its own host's lines and counts only.
        for name, job in jobs.items():
            for event in provision_logs(api, job["id"]):
                host = (event.get("data") or {}).get("host")
                assert host in (None, name), (name, event)
            assert f"changed: [{name}] own values" in messages[name], messages[name]
        for name in ("web1", "web2"):
            counts = jobs[name]["context"]["counts"]
            assert (counts["ok"], counts["changed"], counts["skipped"]) == (3, 3, 1), counts
            assert counts["failed"] == counts["unreachable"] == 0, counts
            assert (hosts[name].scratch / "after").exists()
            assert api.get(f"/systems/{name}").json()["state"] == "ready"

        # The host told to fail fails its own child only.
        failed = jobs["web3"]
        assert failed["status"] == "failed", failed
        assert "task 'fail when told' on web3: web3 was told to fail" in failed["error"], failed["error"]
        assert "web1" not in failed["error"] and "web2" not in failed["error"], failed["error"]
        assert any(m.startswith("✗ web3: ok=2 changed=2 unreachable=0 failed=1") for m in messages["web3"])
        assert not (hosts["web3"].scratch / "after").exists()
        assert api.get("/systems/web3").json()["state"] == "error"
        for job in jobs.values():
            assert leftovers(job["id"]) == [], "a private directory (key, inventory) was left behind"

        # A lone provision runs by itself, at once.
        started = time.monotonic()
        lone = act_and_wait(api, "web2", "provision")
        assert lone["status"] == "succeeded", lone
        assert (hosts["web2"].scratch / "run").read_text().split()[0] == "web2"
        logged = [e["message"] for e in provision_logs(api, lone["id"])]
        assert "running ansible-playbook on web2" in logged, logged
        assert lone["context"]["counts"]["changed"] == 2, lone["context"]  # record the run, after
        assert time.monotonic() - started < 60


def test_in_a_shared_run_a_host_whose_key_changed_fails_its_own_child_only(
    api: httpx.Client, ssh_peer: SshHost, tmp_path: Path
) -> None:
    """No login of Armillary's comes before a shared run: Ansible's own connection trusts only each host's
    recorded key. A host offering another one is not provisioned (unreachable for Ansible), and its
    child's retry, alone through the transport, says so loudly; its companions are not held back."""
    with ExitStack() as stack:
        hosts = three_hosts(api, ssh_peer, stack, tmp_path)
        assert bulk(api, "create")["status"] == "succeeded"
        hosts["web2"].rotate_host_key()

        parent = bulk(api, "provision", on_failure="continue")
        jobs = children(api, parent)
        assert parent["summary"]["hosts"] == {"web1": "succeeded", "web2": "failed", "web3": "failed"}
        assert (hosts["web1"].scratch / "run").read_text().split()[0] == "web1,web2,web3"  # one run
        changed = jobs["web2"]
        assert "HOST KEY CHANGED" in changed["error"] and "possible MITM" in changed["error"], changed["error"]
        assert not (hosts["web2"].scratch / "run").exists()  # nothing ran on it
        messages = [e["message"] for e in provision_logs(api, changed["id"])]
        assert any("unreachable" in m and "Host key verification failed" in m for m in messages), messages
        for job in jobs.values():
            assert leftovers(job["id"]) == []


GATED = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: started
      ansible.builtin.command: "true"
    - name: wait for the gate
      ansible.builtin.wait_for:
        path: "{{ gate }}"
        timeout: 120
    - name: after
      ansible.builtin.command: "touch {{ out }}/after"
"""


def test_cancelling_one_child_leaves_the_shared_run_to_the_others(
    api: httpx.Client, ssh_peer: SshHost, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with ExitStack() as stack:
        hosts = three_hosts(api, ssh_peer, stack, tmp_path, GATED.replace("{{ gate }}", str(gate)))
        assert bulk(api, "create")["status"] == "succeeded"
        started = api.post("/jobs", json={"action": "provision", "selector": {"labels": {"batch": "yes"}},
                                          "concurrency": 10})  # fmt: skip
        assert started.status_code == 202, started.text
        parent_id = started.json()["id"]

        def child_ids() -> dict[str, int]:
            listed = api.get("/jobs", params={"parent": parent_id, "limit": 100}).json()["items"]
            return {job["context"]["hostname"]: job["id"] for job in listed}

        deadline = time.monotonic() + 120
        while True:  # until every host has started the play (the run is under way for all three)
            ids = child_ids()
            if len(ids) == 3 and all(
                f"changed: [{name}] started" in [e["message"] for e in provision_logs(api, job_id)]
                for name, job_id in ids.items()
            ):
                break
            assert time.monotonic() < deadline, ids
            time.sleep(0.2)
        assert api.post(f"/jobs/{ids['web2']}/cancel").status_code == 202
        gone = wait_job(api, ids["web2"], timeout_s=60)  # ends while the others' run still waits
        assert gone["status"] in {"cancelled", "failed"}, gone
        gate.write_text("open\n")
        parent = wait_job(api, parent_id, timeout_s=120)
        jobs = children(api, parent)
        for name in ("web1", "web3"):
            assert jobs[name]["status"] == "succeeded", (name, jobs[name]["error"])
            assert (hosts[name].scratch / "after").exists()
            assert jobs[name]["context"]["counts"]["changed"] == 2, jobs[name]["context"]
        # The cancelled child's host is dropped from its log: nothing of it after it left.
        logged = [e["message"] for e in provision_logs(api, ids["web2"])]
        assert not [m for m in logged if "[web2] after" in m or "[web2] wait for the gate" in m], logged
        for job_id in ids.values():
            assert leftovers(job_id) == []


# ---------------------------------------------------------------- the coalescer alone (no Ansible)


class _Ctx:
    job_id = 0


def test_a_batch_runs_those_that_came_and_a_lone_member_runs_alone() -> None:
    coalescer, ran = Coalescer(), []

    def run_many(members: list[Member], deserted: Any) -> None:
        ran.append(sorted(m.name for m in members))
        for member in members:
            member.result = {"host": member.name}

    # Three expected, two come: after IDLE_S without a newcomer, the two share one run.
    pair = [Member(_Ctx(), name, None, ExitStack()) for name in ("a", "b")]
    started = time.monotonic()
    for member in pair:
        assert coalescer.join("k", 3, member, run_many)
    assert [coalescer.wait(m, lambda: None) for m in pair] == [(True, {"host": "a"}), (True, {"host": "b"})]
    assert ran == [["a", "b"]] and IDLE_S <= time.monotonic() - started < IDLE_S + 2
    assert coalescer.open == {}

    # A namesake cannot join (one inventory name, one host); one member alone is told to run alone.
    lone = Member(_Ctx(), "a", None, ExitStack())
    assert coalescer.join("k", 2, lone, run_many)
    assert not coalescer.join("k", 2, Member(_Ctx(), "a", None, ExitStack()), run_many)
    assert coalescer.wait(lone, lambda: None) == (False, None) and ran == [["a", "b"]]

    # A member that leaves (cancelled) raises its reason at once; the others' run goes on without it.
    stay, go = Member(_Ctx(), "s", None, ExitStack()), Member(_Ctx(), "g", None, ExitStack())
    for member in (stay, go):
        assert coalescer.join("k2", 3, member, run_many)
    with pytest.raises(RuntimeError, match="cancelled"):
        coalescer.wait(go, lambda: RuntimeError("cancelled"))
    assert coalescer.wait(stay, lambda: None) == (False, None)  # the one left runs alone

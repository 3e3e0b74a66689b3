"""The ansible provisioner through the real app (SQLite and PostgreSQL), on real machines.

An ssh hypervisor (its private key a secret) and a system on an sshd in a network namespace
(tests/support/sshhosts.py); real ``ansible-playbook`` runs (through ansible-runner) against it. The
playbooks write only under the host's per-test scratch directory (Ansible's remote temporary directory
included); what they wrote is read back from there, and their task results from the job's events.
"""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from armillary.failures import PermanentFailure as PermanentStepError
from armillary.provisioners.ansible import AnsibleProvisioner, close_masters, build_extra_vars
from tests.support.jobs import act_and_wait
from tests.support.peers import missing_peer
from tests.support.provisioning import events, setup_ssh_system
from tests.support.sshhosts import SshHost, ssh_peer

__all__ = ["ssh_peer"]  # the fixture, imported for this module's tests

SITE = """\
- name: web
  hosts: all
  gather_facts: false
  tasks:
    - name: write the marker
      ansible.builtin.copy:
        dest: "{{ out }}/marker"
        content: "{{ greeting }}|{{ colour }}|{{ app_port }}\\n"
        mode: "0644"
    - name: install the config
      ansible.builtin.template:
        src: app.conf.j2
        dest: "{{ out }}/app.conf"
        mode: "0600"
"""
TEMPLATE = (
    "# {{ armillary_hostname }}\ngreeting = {{ greeting }}\nport = {{ app_port }}\nrelease = {{ release }}\n"
)


@pytest.fixture(autouse=True)
def ansible_peer() -> None:
    if (
        shutil.which("ansible-playbook") is None
        and not (Path(sys.executable).parent / "ansible-playbook").exists()
    ):
        missing_peer("ansible-playbook (ansible-core) is not installed")
    try:
        import ansible_runner  # noqa: F401
    except ImportError:
        missing_peer("ansible-runner is not installed")


def ansible_type(host: SshHost, **spec: Any) -> dict[str, Any]:
    """A provisioner of kind ansible, its remote temporary directory and ``out`` under the host's scratch."""
    extra = {"out": str(host.scratch), **spec.pop("extra_vars", {})}
    return {
        "kind": "ansible",
        "spec": {"remote_tmp": str(host.scratch / "ansible-tmp"), "extra_vars": extra, **spec},
    }


def provision_logs(api: httpx.Client, job_id: int) -> list[dict[str, Any]]:
    return [e for e in events(api, job_id) if e["kind"] == "log" and e["step"] == "provision"]


def leftovers(job_id: int) -> list[str]:
    """The provisioner's private directories of the job still on the control host."""
    return glob.glob(str(Path(tempfile.gettempdir()) / f"armillary-ansible-job{job_id}-*"))


def test_stage_runs_the_playbook_and_again_changes_nothing(
    api: httpx.Client, ssh_peer: SshHost, tmp_path: Path, server_settings
) -> None:
    playbooks = tmp_path / "playbooks"
    (playbooks / "web" / "templates").mkdir(parents=True)
    (playbooks / "web" / "site.yml").write_text(SITE)
    (playbooks / "web" / "templates" / "app.conf.j2").write_text(TEMPLATE)
    server_settings(playbooks_dir=playbooks)  # the server's ARMILLARY_PLAYBOOKS_DIR
    setup_ssh_system(
        api, ssh_peer, ansible_type(ssh_peer, playbook="web/site.yml", extra_vars={"release": "r1"})
    )

    job = act_and_wait(api, "web1", "stage")
    assert job["status"] == "succeeded", (job["error"], [e["message"] for e in events(api, job["id"])])
    # The group's variable beats the environment's; a key that is no valid name is made one.
    assert (ssh_peer.scratch / "marker").read_text() == "hello from the group|blue|8080\n"
    assert (ssh_peer.scratch / "app.conf").read_text() == (
        "# web1\ngreeting = hello from the group\nport = 8080\nrelease = r1\n"
    )
    assert (ssh_peer.scratch / "app.conf").stat().st_mode & 0o777 == 0o600
    counts = job["context"]["counts"]
    assert job["context"]["provisioner"] == "ansible"
    assert counts["changed"] == 2 and counts["failed"] == 0 and counts["unreachable"] == 0, counts
    assert api.get("/systems/web1").json()["state"] == "ready"

    logged = provision_logs(api, job["id"])
    messages = [e["message"] for e in logged]
    assert "changed: [web1] write the marker" in messages, messages
    assert "changed: [web1] install the config" in messages, messages
    assert messages.index("changed: [web1] write the marker") < messages.index(
        "changed: [web1] install the config"
    )
    result = next(e for e in logged if e["message"] == "changed: [web1] install the config")
    assert result["data"]["host"] == "web1" and result["data"]["status"] == "changed"
    assert result["data"]["task"] == "install the config"
    assert any(m.startswith("✔ web1: ok=2 changed=2") for m in messages), messages
    everything = api.get(f"/jobs/{job['id']}/events", params={"limit": 1000}).text
    assert ssh_peer.private_key_pem.splitlines()[1] not in everything
    assert leftovers(job["id"]) == [], "the private directory (key, inventory) was left behind"

    again = act_and_wait(api, "web1", "provision")
    assert again["status"] == "succeeded", again
    assert again["context"]["counts"]["changed"] == 0 and again["context"]["counts"]["ok"] == 2, again[
        "context"
    ]
    assert "ok: [web1] install the config" in [e["message"] for e in provision_logs(api, again["id"])]


def test_a_failing_task_fails_the_job(api: httpx.Client, ssh_peer: SshHost) -> None:
    playbook = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: fine
      ansible.builtin.command: echo all good
      changed_when: false
    - name: migrate db
      ansible.builtin.fail:
        msg: disk on fire
    - name: after
      ansible.builtin.file:
        path: "{{ out }}/never"
        state: touch
"""
    setup_ssh_system(api, ssh_peer, ansible_type(ssh_peer, playbook={"inline": playbook}))
    job = act_and_wait(api, "web1", "stage")
    assert job["status"] == "failed", job
    assert "task 'migrate db' on web1: disk on fire" in job["error"], job["error"]
    assert api.get("/systems/web1").json()["state"] == "error"
    assert not (ssh_peer.scratch / "never").exists(), "a task after the failing one ran"
    logged = provision_logs(api, job["id"])
    failed = [e for e in logged if e["message"] == "failed: [web1] migrate db — disk on fire"]
    assert failed and failed[0]["level"] == "error" and failed[0]["data"]["status"] == "failed", logged
    assert "ok: [web1] fine" in [e["message"] for e in logged]
    assert job["steps"][-1]["attempts"] == 1  # a failed task is not retried
    assert leftovers(job["id"]) == []


def test_check_mode_changes_nothing(api: httpx.Client, ssh_peer: SshHost) -> None:
    playbook = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: write
      ansible.builtin.copy:
        dest: "{{ out }}/checked"
        content: "{{ colour }}\\n"
"""
    setup_ssh_system(api, ssh_peer, ansible_type(ssh_peer, playbook={"inline": playbook}, check=True))
    job = act_and_wait(api, "web1", "stage")
    assert job["status"] == "succeeded", (job["error"], [e["message"] for e in events(api, job["id"])])
    assert job["context"]["counts"]["check"] is True
    assert job["context"]["counts"]["changed"] == 1  # what would change
    assert not (ssh_peer.scratch / "checked").exists(), "check mode changed the machine"
    assert "changed: [web1] write" in [e["message"] for e in provision_logs(api, job["id"])]


def _git(*argv: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main", *argv],
        cwd=cwd,
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_a_playbook_and_roles_from_a_git_repository(
    api: httpx.Client, ssh_peer: SshHost, tmp_path: Path
) -> None:
    work = tmp_path / "ops"
    (work / "roles" / "greet" / "tasks").mkdir(parents=True)
    (work / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: from git\n      ansible.builtin.copy:\n"
        '        dest: "{{ out }}/from-git"\n        content: "{{ colour }} {{ release }}\\n"\n'
    )
    (work / "roles" / "greet" / "tasks" / "main.yml").write_text(
        '- name: greet\n  ansible.builtin.copy:\n    dest: "{{ out }}/greeted"\n    content: "{{ who }}\\n"\n'
    )
    _git("init", "-q", ".", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "first", cwd=work)
    _git("branch", "release", cwd=work)
    (work / "site.yml").write_text(
        "- hosts: all\n  tasks:\n    - ansible.builtin.fail: msg=not this branch\n"
    )
    _git("commit", "-q", "-am", "main moves on", cwd=work)
    bare = tmp_path / "ops.git"
    _git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)

    provisioner = ansible_type(
        ssh_peer,
        playbook={"git": f"file://{bare}", "ref": "release", "path": "site.yml"},
        roles=[{"role": "greet", "vars": {"who": "role vars"}}],
        gather_facts=False,
        extra_vars={"release": "r2"},
    )
    setup_ssh_system(api, ssh_peer, provisioner)
    job = act_and_wait(api, "web1", "stage")
    assert job["status"] == "succeeded", (job["error"], [e["message"] for e in events(api, job["id"])])
    assert (ssh_peer.scratch / "from-git").read_text() == "blue r2\n"
    assert (ssh_peer.scratch / "greeted").read_text() == "role vars\n"
    assert job["context"]["counts"]["changed"] == 2, job["context"]
    messages = [e["message"] for e in provision_logs(api, job["id"])]
    assert any(m.startswith(f"cloned file://{bare} at ") for m in messages), messages
    assert "changed: [web1] greet : greet" in messages, messages
    assert leftovers(job["id"]) == [], "the clone was left behind"

    # A ref that does not exist fails, saying so.
    provisioner["spec"]["playbook"]["ref"] = "nope"
    assert api.patch("/types/web", json={"provisioner": provisioner}).status_code == 200
    job = act_and_wait(api, "web1", "provision")
    assert job["status"] == "failed" and f"cannot clone file://{bare} at nope" in job["error"], job["error"]


# ---------------------------------------------------------------- the spec and the variables, alone


def test_spec_is_checked_when_the_type_is_saved(api: httpx.Client) -> None:
    for spec, words in [
        ({}, "give a playbook, roles, or both"),
        ({"playbook": "../etc/site.yml"}, "relative path under the playbooks directory"),
        ({"playbook": {"path": "a.yml", "inline": "x"}}, "exactly one of path, inline or git"),
        ({"playbook": {"git": "ext::sh -c evil", "path": "a.yml"}}, "must be a git URL"),
        ({"playbook": {"git": "file:///r.git", "path": "../../x.yml"}}, "without '..'"),
        ({"playbook": {"git": "file:///r.git", "ref": "--upload-pack=x"}}, "branch, tag or commit"),
        ({"roles": ["../evil"]}, "must be a role name"),
        (
            {"roles": ["x"], "extra_vars": {"ansible_ssh_common_args": "-o StrictHostKeyChecking=no"}},
            "ansible_",
        ),
        ({"roles": ["x"], "tags": ["a,b"]}, "not a tag"),
    ]:
        with pytest.raises(PermanentStepError) as caught:
            AnsibleProvisioner.validate_spec(spec)
        assert words in str(caught.value), (spec, str(caught.value))
    refused = api.post(
        "/types", json={"name": "bad", "provisioner": {"kind": "ansible", "spec": {"playbook": "/etc/x.yml"}}}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["field"] == "provisioner.spec"
    parsed = AnsibleProvisioner.validate_spec(
        {"playbook": "a.yml", "roles": ["common", {"role": "ns.coll.web"}]}
    )
    assert parsed.playbook is not None and parsed.playbook.path == "a.yml"
    assert [r.role for r in parsed.roles] == ["common", "ns.coll.web"]
    git = AnsibleProvisioner.validate_spec({"playbook": {"git": "git@example.com:ops.git"}})
    assert git.playbook is not None and git.playbook.path == "site.yml"


def test_spec_extra_vars_win_over_resolved_variables() -> None:
    merged, collisions, dropped = build_extra_vars(
        {
            "colour": "blue",
            "app-port": 8080,
            "app_port": 9090,
            "ansible_host": "evil",
            "ansible_become": True,
        },
        {"colour": "red"},
    )
    assert merged == {"colour": "red", "app_port": 9090, "ansible_become": True}
    assert collisions == ["'app-port' and 'app_port' both become app_port"]
    assert dropped == ["ansible_host"]


def test_close_masters_ends_the_masters_of_its_directory_only(tmp_path: Path) -> None:
    """The SSH masters a run leaves (OpenSSH titles each ``ssh: <control path> [mux]``) are found in /proc
    and ended without an ``ssh -O exit`` each; a master of another directory is left alone. Stand-ins:
    ``sleep`` processes titled as masters (a real master needs a real SSH login; the shared-run tests
    make those)."""
    if not Path("/proc/self/cmdline").exists():
        missing_peer("/proc (the masters are found there)")
    ours, theirs = tmp_path / "cp", tmp_path / "other-cp"
    ours.mkdir()
    theirs.mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(ours / "abc"))  # a control socket: something to close

        def master(control_dir: Path) -> subprocess.Popen:
            title = f"ssh: {control_dir}/abc [mux]"
            return subprocess.Popen(["bash", "-c", f'exec -a "{title}" sleep 60'])

        mine, other = master(ours), master(theirs)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not all(
                Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(b"ssh: ") for p in (mine, other)
            ):
                time.sleep(0.01)  # until bash has exec'ed
            close_masters(ours)
            assert mine.wait(timeout=5) == -15  # SIGTERM
            assert other.poll() is None
        finally:
            for proc in (mine, other):
                proc.kill()
                proc.wait()

"""The script provisioner through the real app (SQLite and PostgreSQL), on real machines.

An ssh hypervisor (its private key a secret) and a system on an sshd in a network namespace; a docker
hypervisor on podman's Docker API and a system in a container. Scripts really run there, write under
the test's own directory, and their output is read back from the job's events.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from armillary.failures import PermanentFailure as PermanentStepError
from armillary.provisioners.script import ScriptProvisioner, build_env, env_name
from armillary.sources import Roots
from tests.support import podman as podman_support
from tests.support.jobs import act_and_wait
from tests.support.podman import PodmanPeer
from tests.support.provisioning import events, setup_ssh
from tests.support.sshhosts import SshHost, ssh_host

# The peer's fixtures (tests/support/podman.py), made visible to this module's tests.
podman_peer = podman_support.podman_peer
podman = podman_support.podman

WRITE = (
    'printf "%s|%s|%s|%s\\n" "$greeting" "$colour" "$app_port" "$MODE" > "$MARKER"\n'
    'echo "wrote $MARKER for $ARMILLARY_HOSTNAME"\necho "a warning line" >&2\n'
)


@pytest.fixture
def ssh_peer(tmp_path: Path) -> Iterator[SshHost]:
    with ssh_host(tmp_path) as host:
        yield host


def job_dirs(host: SshHost) -> list[str]:
    """The per-job directories the provisioner made on the host (and did not remove)."""
    return glob.glob(str(host.scratch / "armillary-job*"))


def test_stage_runs_the_scripts_with_variables(api: httpx.Client, ssh_peer: SshHost) -> None:
    marker = ssh_peer.scratch / "marker"
    setup_ssh(
        api,
        ssh_peer,
        scripts=[
            {"name": "write marker", "inline": WRITE},
            {
                "name": "python",
                "inline": "import os\nprint('python sees', os.environ['colour'])\n",
                "interpreter": ["python3", "-u"],
            },
        ],
        env={"MARKER": str(marker), "MODE": {"fast": True}},
    )
    job = act_and_wait(api, "web1", "stage")
    assert job["status"] == "succeeded", job
    # The group's variable beats the environment's; a key that is no valid name is made one; JSON for a map.
    assert marker.read_text() == 'hello from the group|blue|8080|{"fast":true}\n'
    assert job["context"]["provisioner"] == "script"
    assert job["context"]["counts"] == {"ok": 2, "changed": 2, "failed": 0}
    shown = api.get("/systems/web1").json()
    assert shown["state"] == "ready", shown

    logged = [e for e in events(api, job["id"]) if e["kind"] == "log" and e["step"] == "provision"]
    lines = {(e["message"], (e["data"] or {}).get("stream")) for e in logged}
    assert (f"wrote {marker} for web1", "stdout") in lines
    assert ("a warning line", "stderr") in lines
    assert ("python sees blue", "stdout") in lines
    assert any(e["message"].startswith("✔ script write marker exited 0") for e in logged)
    assert [e["message"] for e in logged].index(f"wrote {marker} for web1") < [
        e["message"] for e in logged
    ].index("python sees blue")
    assert job_dirs(ssh_peer) == [], "the per-job directory was left behind"
    assert ssh_peer.private_key_pem.splitlines()[1] not in api.get(f"/jobs/{job['id']}/events").text


def test_a_failing_script_fails_the_job(api: httpx.Client, ssh_peer: SshHost) -> None:
    never = ssh_peer.scratch / "never"
    setup_ssh(
        api,
        ssh_peer,
        scripts=[
            {"name": "fine", "inline": "echo all good\n"},
            {"name": "migrate db", "inline": "echo step one\necho 'disk on fire' >&2\nexit 7\n"},
            {"name": "after", "inline": 'touch "$NEVER"\n'},
        ],
        env={"NEVER": str(never)},
    )
    job = act_and_wait(api, "web1", "stage")
    assert job["status"] == "failed", job
    error = job["error"]
    assert "script 'migrate db' exited 7" in error and "step one" in error and "disk on fire" in error, error
    assert api.get("/systems/web1").json()["state"] == "error"
    assert not never.exists(), "a script after the failing one ran"
    messages = [e["message"] for e in events(api, job["id"]) if e["kind"] == "log"]
    assert "all good" in messages and "disk on fire" in messages
    assert any(m.startswith("✗ script migrate db exited 7") for m in messages)
    assert job_dirs(ssh_peer) == [], "the per-job directory was left behind"


def test_a_script_past_its_timeout_is_killed(api: httpx.Client, ssh_peer: SshHost) -> None:
    pidfile = ssh_peer.scratch / "sleep.pid"
    setup_ssh(
        api,
        ssh_peer,
        scripts=[
            {
                "name": "hangs",
                "timeout": 1.5,
                "inline": 'echo "going to sleep"\nsleep 30 &\necho $! > "$PIDFILE"\nwait\n',
            }
        ],
        env={"PIDFILE": str(pidfile)},
    )
    job = act_and_wait(api, "web1", "stage")
    assert job["status"] == "failed", job
    assert "script 'hangs' timed out after 1.5s (killed)" in job["error"] and "going to sleep" in job["error"]
    pid = pidfile.read_text().strip()
    stat = ssh_peer.run(["cat", f"/proc/{pid}/stat"], check=False)
    assert stat.returncode != 0 or stat.stdout.rsplit(")", 1)[1].split()[0] in {"Z", "X"}, (
        "the script still runs"
    )
    assert job_dirs(ssh_peer) == []


def test_changed_host_key_fails_provisioning_loudly(api: httpx.Client, ssh_peer: SshHost) -> None:
    setup_ssh(api, ssh_peer, scripts=[{"name": "x", "inline": "echo hi\n"}], env={})
    created = act_and_wait(api, "web1", "create")
    assert created["status"] == "succeeded", created
    ssh_peer.rotate_host_key()
    job = act_and_wait(api, "web1", "provision")
    assert job["status"] == "failed", job
    assert "HOST KEY CHANGED" in job["error"] and "possible MITM" in job["error"], job["error"]
    assert len(job["steps"][-1]["error"] or "") > 0 and job["steps"][-1]["attempts"] == 1  # not retried


def test_scripts_from_the_scripts_directory_in_a_container(
    api: httpx.Client, podman: PodmanPeer, tmp_path: Path, server_settings
) -> None:
    scripts = tmp_path / "scripts"
    (scripts / "web").mkdir(parents=True)
    (scripts / "web" / "hello.sh").write_text('echo "hello $1 from $(hostname) colour=$colour"\n')
    server_settings(scripts_dir=scripts)  # the server's ARMILLARY_SCRIPTS_DIR
    assert (
        api.post("/environments", json={"name": "dev", "variables": {"colour": "green"}}).status_code == 201
    )
    made = api.post(
        "/hypervisors",
        json={
            "name": "pods",
            "environment": "dev",
            "driver": "docker",
            "config": {"base_url": podman.base_url},
        },
    )
    assert made.status_code == 201, made.text
    spec = {"scripts": [{"name": "hello", "path": "web/hello.sh", "args": ["world"]}]}
    assert (
        api.post("/types", json={"name": "box", "provisioner": {"kind": "script", "spec": spec}}).status_code
        == 201
    )
    made = api.post(
        "/systems",
        json={
            "hostname": "box1",
            "environment": "dev",
            "hypervisor": "pods",
            "type": "box",
            "driver": {"image": podman.image, "pull": "never"},
        },
    )
    assert made.status_code == 201, made.text
    job = act_and_wait(api, "box1", "stage")
    assert job["status"] == "succeeded", job
    messages = [e["message"] for e in events(api, job["id"]) if e["kind"] == "log"]
    assert "hello world from box1 colour=green" in messages, messages

    # A path out of the scripts directory is refused when the type is saved, before anything runs.
    spec = {"scripts": [{"name": "escape", "path": "web/../../secret"}]}
    refused = api.patch("/types/box", json={"provisioner": {"kind": "script", "spec": spec}})
    assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "provisioner.spec"
    assert "relative path under the scripts directory" in refused.json()["detail"]


# ---------------------------------------------------------------- the spec and the environment, alone


def test_spec_is_checked_and_variables_become_environment() -> None:
    for bad, words in [
        ({}, "scripts: Field required"),
        ({"scripts": []}, "at least 1"),
        ({"scripts": [{"name": "a"}]}, "exactly one of inline or path"),
        ({"scripts": [{"name": "a", "inline": "x", "path": "y"}]}, "exactly one of inline or path"),
        ({"scripts": [{"name": "a", "path": "/etc/passwd"}]}, "relative path"),
        ({"scripts": [{"name": "a", "inline": "x"}, {"name": "a", "inline": "y"}]}, "unique"),
        ({"scripts": [{"name": "a", "inline": "x", "shell": "bash"}]}, "Extra inputs"),
        ({"scripts": [{"name": "a", "inline": "x"}], "remote_tmp": "tmp"}, "absolute"),
    ]:
        with pytest.raises(PermanentStepError, match=words):
            ScriptProvisioner.validate_spec(bad)
    assert [env_name(k) for k in ("app-port", "9lives", "ok_NAME", "a.b c", "")] == [
        "app_port",
        "_9lives",
        "ok_NAME",
        "a_b_c",
        "_",
    ]
    env, collisions = build_env(
        {"a-b": 1, "a_b": 2, "flag": False, "none": None, "list": [1, "x"], "num": 1.5, "text": "é"},
        {"text": "override", "extra": True},
    )
    assert env == {
        "a_b": "2",
        "flag": "false",
        "none": "",
        "list": '[1,"x"]',
        "num": "1.5",
        "text": "override",
        "extra": "true",
    }
    assert collisions == ["'a-b' and 'a_b' both become a_b"]


def test_script_files_stay_inside_the_scripts_directory(tmp_path: Path) -> None:
    root = tmp_path / "scripts"
    root.mkdir()
    (root / "ok.sh").write_text("echo ok\n")
    (tmp_path / "secret").write_text("not for scripts")
    (root / "link.sh").symlink_to(tmp_path / "secret")
    spec = ScriptProvisioner.validate_spec(
        {
            "scripts": [
                {"name": "ok", "path": "ok.sh"},
                {"name": "link", "path": "link.sh"},
                {"name": "gone", "path": "missing.sh"},
            ]
        }
    )
    ok, link, gone = spec.scripts
    with pytest.raises(PermanentStepError, match="no scripts directory"):
        ScriptProvisioner._body(ok, Roots())
    roots = Roots(scripts=root)  # the server's ARMILLARY_SCRIPTS_DIR
    assert ScriptProvisioner._body(ok, roots) == b"echo ok\n"
    with pytest.raises(PermanentStepError, match="outside the scripts directory"):
        ScriptProvisioner._body(link, roots)
    with pytest.raises(PermanentStepError, match="no file missing.sh"):
        ScriptProvisioner._body(gone, roots)

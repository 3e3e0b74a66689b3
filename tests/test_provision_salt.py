"""The salt provisioner through the real app (SQLite and PostgreSQL), on real machines.

An ssh hypervisor and a system on an sshd in a network namespace (tests/support/sshhosts.py); the
machine's ``salt-call`` is Salt from PyPI in a cached venv of its own (tests/support/salt.py) — the
namespace host shares this machine's filesystem, so the venv is there too. States trees are made by
each test under its own ``ARMILLARY_SALT_STATES_DIR``; states write only under the host's scratch
directory, and every result is read back from the files and from the job's events.
"""

from __future__ import annotations

import glob
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from armillary.failures import PermanentFailure as PermanentStepError
from armillary.provisioners.salt import (
    SaltProvisioner,
    merge_pillar,
    pack_tree,
    state_results,
    states_tree,
)
from armillary.sources import Roots
from tests.support import salt as salt_support
from tests.support.jobs import act, wait_job
from tests.support.provisioning import events, setup_ssh_system
from tests.support.sshhosts import SshHost, ssh_host

# The peer's fixture (tests/support/salt.py), made visible to this module's tests.
salt_call = salt_support.salt_call

JOB_TIMEOUT_S = 120.0

MOTD_SLS = """\
motd:
  file.managed:
    - name: {{ pillar['target'] }}
    - contents: {{ (pillar['greeting'] ~ '|' ~ pillar['colour'] ~ '|' ~ pillar['motd']['text'] ~ '|'
                    ~ pillar['motd']['size'] ~ '|' ~ pillar['app-port'] ~ '|'
                    ~ pillar['armillary']['hostname']) | json }}
    - mode: '0640'
"""


@pytest.fixture
def ssh_peer(tmp_path: Path) -> Iterator[SshHost]:
    with ssh_host(tmp_path) as host:
        yield host


@pytest.fixture
def states_dir(tmp_path: Path, server_settings) -> Path:
    root = tmp_path / "salt-states"
    root.mkdir()
    server_settings(salt_states_dir=root)  # the server's ARMILLARY_SALT_STATES_DIR
    return root


def write_tree(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def run(api: httpx.Client, action: str = "stage") -> dict[str, Any]:
    response = act(api, "web1", action)
    assert response.status_code == 202, response.text
    return wait_job(api, response.json()["id"], timeout_s=JOB_TIMEOUT_S)


def provision_log(api: httpx.Client, job: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in events(api, job["id"]) if e["kind"] == "log" and e["step"] == "provision"]


def job_dirs(host: SshHost) -> list[str]:
    return glob.glob(str(host.scratch / "armillary-job*"))


def salt_type(spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "salt", "spec": spec}


# ---------------------------------------------------------------- through the API


def test_states_apply_with_pillar_from_variables(
    api: httpx.Client, ssh_peer: SshHost, states_dir: Path, salt_call: str
) -> None:
    write_tree(states_dir / "web", {"motd.sls": MOTD_SLS})
    target = ssh_peer.scratch / "motd"
    spec = {
        "states": {"path": "web"},
        "state": "motd",
        "salt_call": salt_call,
        "remote_tmp": str(ssh_peer.scratch),
        # Variables win over the spec's pillar; mappings merge key by key.
        "pillar": {
            "target": str(target),
            "greeting": "from the spec",
            "motd": {"text": "{{ not a template }}"},
        },
    }
    setup_ssh_system(api, ssh_peer, salt_type(spec))
    made = api.patch(
        "/groups/web",
        json={"variables": {"greeting": "hello from the group", "app-port": 8080, "motd": {"size": 3}}},
    )
    assert made.status_code == 200, made.text

    job = run(api)
    assert job["status"] == "succeeded", job
    # group > spec pillar; env variable; spec-only nested key kept beside a variable's; the reserved key.
    assert target.read_text() == "hello from the group|blue|{{ not a template }}|3|8080|web1\n"
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert job["context"]["provisioner"] == "salt"
    assert job["context"]["counts"] == {"ok": 1, "changed": 1, "failed": 0, "states": 1}
    assert api.get("/systems/web1").json()["state"] == "ready"
    logged = provision_log(api, job)
    state_lines = [e for e in logged if (e["data"] or {}).get("state") == "motd"]
    assert len(state_lines) == 1, logged
    line = state_lines[0]
    assert line["message"].startswith(f"✔ file.managed motd ({target}): File {target} updated"), line
    assert line["data"]["result"] is True and line["data"]["changed"] is True
    # Salt's own log lines streamed live (info level).
    assert any(
        "Running state" in e["message"] and (e["data"] or {}).get("stream") == "stderr" for e in logged
    )
    assert any(e["message"].startswith("✔ salt: 1 state(s) on web1, 1 changed, 0 failed") for e in logged)
    assert job_dirs(ssh_peer) == [], "the per-job directory was left behind"

    # Again: nothing to change.
    again = run(api, "provision")
    assert again["status"] == "succeeded", again
    assert again["context"]["counts"] == {"ok": 1, "changed": 0, "failed": 0, "states": 1}
    assert any(
        e["message"].startswith("✔ file.managed motd") and e["data"]["changed"] is False
        for e in provision_log(api, again)
        if (e["data"] or {}).get("state")
    )

    # Test mode with a new value: reported as "would change", the file left as it was.
    made = api.patch(
        "/groups/web", json={"variables": {"greeting": "changed", "app-port": 8080, "motd": {"size": 3}}}
    )
    assert made.status_code == 200, made.text
    made = api.patch("/types/web", json={"provisioner": salt_type({**spec, "test": True})})
    assert made.status_code == 200, made.text
    dry = run(api, "provision")
    assert dry["status"] == "succeeded", dry
    assert dry["context"]["counts"] == {
        "ok": 1,
        "changed": 0,
        "failed": 0,
        "states": 1,
        "would_change": 1,
        "test": True,
    }
    assert target.read_text() == "hello from the group|blue|{{ not a template }}|3|8080|web1\n"
    assert any(e["message"].startswith("? file.managed motd") for e in provision_log(api, dry))
    assert job_dirs(ssh_peer) == []


def test_failed_states_fail_the_job(
    api: httpx.Client, ssh_peer: SshHost, states_dir: Path, salt_call: str
) -> None:
    fine = ssh_peer.scratch / "fine"
    nowhere = ssh_peer.scratch / "no-such-dir" / "file"
    never = ssh_peer.scratch / "never"
    write_tree(
        states_dir / "tree",
        {
            "broken/init.sls": f"""\
fine:
  file.managed:
    - name: {fine}
    - contents: ok
migrate:
  cmd.run:
    - name: echo 'disk on fire' >&2; exit 3
orphan:
  file.managed:
    - name: {nowhere}
    - contents: x
after:
  file.managed:
    - name: {never}
    - require:
      - cmd: migrate
""",
        },
    )
    spec = {
        "states": {"path": "tree"},
        "state": ["broken"],
        "salt_call": salt_call,
        "remote_tmp": str(ssh_peer.scratch),
    }
    setup_ssh_system(api, ssh_peer, salt_type(spec))
    job = run(api)
    assert job["status"] == "failed", job
    error = job["error"]
    assert "salt: 3 of 4 state(s) failed on web1" in error, error
    assert "cmd.run migrate (echo 'disk on fire' >&2; exit 3)" in error and "exit code 3" in error, error
    assert "disk on fire" in error, error
    assert f"file.managed orphan ({nowhere}): Parent directory not present" in error, error
    assert "file.managed after" in error and "requisite failed" in error.lower(), error
    assert fine.read_text() == "ok\n" and not never.exists() and not nowhere.parent.exists()
    assert api.get("/systems/web1").json()["state"] == "error"
    logged = provision_log(api, job)
    failed = {e["data"]["state"]: e for e in logged if (e["data"] or {}).get("result") is False}
    assert set(failed) == {"migrate", "orphan", "after"}
    assert failed["orphan"]["level"] == "error"
    assert "Parent directory not present" in failed["orphan"]["message"]
    assert any(e["message"].startswith("✔ file.managed fine") for e in logged)
    assert any(e["message"].startswith("✗ salt: 3 of 4 state(s) failed") for e in logged)
    assert job_dirs(ssh_peer) == []

    # States that do not even render fail too, with Salt's message.
    write_tree(
        states_dir / "tree", {"broken/init.sls": "bad:\n  file.managed:\n    - name: {{ pillar['nope'] }\n"}
    )
    job = run(api, "provision")
    assert job["status"] == "failed", job
    assert "salt could not render or compile the states" in job["error"], job["error"]
    assert "broken" in job["error"]

    # A highstate without a top.sls is refused before anything runs on the machine.
    assert (
        api.patch("/types/web", json={"provisioner": salt_type({**spec, "state": None})}).status_code == 200
    )
    job = run(api, "provision")
    assert job["status"] == "failed" and "a highstate needs a top.sls" in job["error"], job

    # No salt-call where the spec says: the exit code and what the machine said.
    missing = {**spec, "salt_call": str(ssh_peer.scratch / "no-salt-call")}
    assert api.patch("/types/web", json={"provisioner": salt_type(missing)}).status_code == 200
    job = run(api, "provision")
    assert job["status"] == "failed", job
    assert "exited 127 and left no result" in job["error"] and "no-salt-call" in job["error"], job["error"]
    assert job_dirs(ssh_peer) == []


def test_highstate_from_a_git_repository(
    api: httpx.Client, ssh_peer: SshHost, states_dir: Path, salt_call: str
) -> None:
    repo = states_dir / "repo"
    marker = ssh_peer.scratch / "marker"
    write_tree(
        repo / "salt",
        {
            "top.sls": "base:\n  '*':\n    - marker\n",
            "marker.sls": "marker:\n  file.managed:\n    - name: {{ pillar['target'] }}\n"
            "    - contents: 'v1 {{ grains['id'] }}'\n",
        },
    )
    (repo / "README").write_text("not part of the tree\n")

    def git(*args: str) -> None:
        subprocess.run(
            ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
            check=True,
            capture_output=True,
            timeout=60,
        )

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "v1")
    git("tag", "v1")
    (repo / "salt" / "marker.sls").write_text(
        "marker:\n  file.managed:\n    - name: {{ pillar['target'] }}\n    - contents: v2\n"
    )
    git("commit", "-q", "-am", "v2")

    spec = {
        "states": {"git": {"url": repo.as_uri(), "ref": "v1", "subdir": "salt"}},
        "pillar": {"target": str(marker)},
        "salt_call": salt_call,
        "remote_tmp": str(ssh_peer.scratch),
    }
    setup_ssh_system(api, ssh_peer, salt_type(spec))
    job = run(api)
    assert job["status"] == "succeeded", job
    assert marker.read_text() == "v1 web1\n"  # the tag, not the branch's head; the minion id is the hostname
    assert job["context"]["counts"]["changed"] == 1
    messages = [e["message"] for e in provision_log(api, job)]
    assert any(m.startswith(f"salt states: {repo.as_uri()} at v1 (") for m in messages), messages
    assert any("applying salt states (highstate)" in m for m in messages), messages

    # The branch: its head.
    spec["states"]["git"]["ref"] = "main"
    assert api.patch("/types/web", json={"provisioner": salt_type(spec)}).status_code == 200
    job = run(api, "provision")
    assert job["status"] == "succeeded", job
    assert marker.read_text() == "v2\n"

    # Refused when the type is saved: a path out of the states directory, a remote helper.
    for bad, words in [
        ({"path": "../elsewhere"}, "relative path under the salt states directory"),
        ({"git": {"url": "ext::sh -c touch% /tmp/pwned"}}, "not a repository URL"),
    ]:
        refused = api.patch("/types/web", json={"provisioner": salt_type({**spec, "states": bad})})
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == "provisioner.spec"
        assert words in refused.json()["detail"], refused.json()
    # A file:// repository outside the states directory fails the job before anything runs.
    outside = repo.rename(states_dir.parent / "outside-repo")
    spec["states"]["git"]["url"] = outside.as_uri()
    assert api.patch("/types/web", json={"provisioner": salt_type(spec)}).status_code == 200
    job = run(api, "provision")
    assert job["status"] == "failed" and "outside the ARMILLARY_SALT_STATES_DIR" in job["error"], job
    assert job_dirs(ssh_peer) == []


# ---------------------------------------------------------------- the spec, the tree and results, alone


def test_spec_is_checked() -> None:
    ok = SaltProvisioner.validate_spec({"states": {"path": "web"}, "state": ["a.b", "c"]})
    assert ok.sls_names == ["a.b", "c"] and ok.salt_call_argv == ["salt-call"] and ok.log_level == "info"
    assert SaltProvisioner.validate_spec({"states": {"path": "web"}, "state": "highstate"}).sls_names == []
    assert SaltProvisioner.validate_spec({"states": {"path": "web"}}).sls_names == []
    for bad, words in [
        ({}, "states: Field required"),
        ({"states": {}}, "exactly one of path or git"),
        ({"states": {"path": "a", "git": {"url": "https://x/y"}}}, "exactly one of path or git"),
        ({"states": {"path": "/srv/salt"}}, "relative path"),
        ({"states": {"path": "a/../../b"}}, "relative path"),
        ({"states": {"git": {"url": "--upload-pack=touch /tmp/x"}}}, "not a repository URL"),
        ({"states": {"git": {"url": "ext::sh"}}}, "remote helpers"),
        ({"states": {"git": {"url": "fd::3"}}}, "remote helpers"),
        ({"states": {"git": {"url": "ftp://h/r"}}}, "scheme 'ftp' is not allowed"),
        ({"states": {"git": {"url": "https://h/r", "ref": "--output=/tmp/x"}}}, "not a valid branch"),
        ({"states": {"git": {"url": "https://h/r", "subdir": "../x"}}}, "relative path"),
        ({"states": {"path": "a"}, "state": "a;rm -rf /"}, "is not an SLS name"),
        ({"states": {"path": "a"}, "state": "-x"}, "is not an SLS name"),
        ({"states": {"path": "a"}, "state": ["highstate", "a"]}, "cannot be combined"),
        ({"states": {"path": "a"}, "state": []}, "at least one SLS name"),
        ({"states": {"path": "a"}, "salt_call": "--help"}, "must start with a program"),
        ({"states": {"path": "a"}, "remote_tmp": "tmp"}, "absolute"),
        ({"states": {"path": "a"}, "log_level": "trace"}, "log_level"),
        ({"states": {"path": "a"}, "pilar": {}}, "Extra inputs"),
    ]:
        with pytest.raises(PermanentStepError, match=words):
            SaltProvisioner.validate_spec(bad)
    assert merge_pillar(
        {"a": {"x": 1, "y": 2}, "b": 1, "c": [1]}, {"a": {"y": 3}, "b": {"z": 1}, "c": [2]}
    ) == {
        "a": {"x": 1, "y": 3},
        "b": {"z": 1},
        "c": [2],
    }


class _Ctx:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        self.lines.append(message)


def test_states_trees_stay_inside_the_states_directory(tmp_path: Path) -> None:
    import io
    import tarfile

    root = tmp_path / "states"
    tree = write_tree(root / "web", {"init.sls": "x: {}\n", "files/conf": "c\n", ".git/config": "no\n"})
    (tree / "shared.sls").symlink_to(tree / "init.sls")
    (tmp_path / "secret").write_text("not for states")
    source = SaltProvisioner.validate_spec({"states": {"path": "web"}}).states
    with pytest.raises(PermanentStepError, match="no salt states directory"), states_tree(_Ctx(), source, 10, Roots()):
        pass
    roots = Roots(salt_states=root)  # the server's ARMILLARY_SALT_STATES_DIR
    with states_tree(_Ctx(), source, 10, roots) as found:
        archive, files = pack_tree(found)
    with tarfile.open(fileobj=io.BytesIO(archive)) as unpacked:
        members = {m.name: m for m in unpacked.getmembers()}
        assert sorted(members) == ["files", "files/conf", "init.sls", "shared.sls"]
        assert members["shared.sls"].isfile()  # a link inside the tree goes up as the file it names
        assert unpacked.extractfile("shared.sls").read() == b"x: {}\n"  # type: ignore[union-attr]
    assert files == 3

    (tree / "leak.sls").symlink_to(tmp_path / "secret")
    with pytest.raises(PermanentStepError, match="leak.sls is a link out of the states tree"):
        pack_tree(tree)
    (tree / "leak.sls").unlink()
    (root / "escape").symlink_to(tmp_path)
    escape = SaltProvisioner.validate_spec({"states": {"path": "escape"}}).states
    with (
        pytest.raises(PermanentStepError, match="outside the ARMILLARY_SALT_STATES_DIR"),
        states_tree(_Ctx(), escape, 10, roots),
    ):
        pass


def test_salt_results_are_read_in_order() -> None:
    payload = {
        "local": {
            "cmd_|-b_|-false_|-run": {
                "result": False,
                "comment": 'Command "false" run',
                "name": "false",
                "changes": {"retcode": 1, "stderr": "boom"},
                "__run_num__": 1,
                "__id__": "b",
                "__sls__": "x",
            },
            "file_|-a_|-/tmp/a_|-managed": {
                "result": True,
                "comment": "ok\nsecond line",
                "name": "/tmp/a",
                "changes": {},
                "__run_num__": 0,
                "__id__": "a",
                "__sls__": "x",
            },
        }
    }
    first, second = state_results(payload)
    assert (first["state"], first["function"], first["comment"]) == ("a", "file.managed", "ok / second line")
    assert (second["state"], second["function"], second["result"]) == ("b", "cmd.run", False)
    with pytest.raises(PermanentStepError, match="could not render or compile the states:\nRendering SLS"):
        state_results({"local": ["Rendering SLS 'base:x' failed: bad"]})
    with pytest.raises(PermanentStepError, match="unexpected result"):
        state_results({"other": 1})

"""Deploy with releases and automatic rollback (issue 7), on real SSH hosts, through the real app.

The system is an ssh-driver system on an sshd in a network namespace (``tests.support.sshhosts``); the
project lives under the host's per-test scratch directory (its ``root``), sources are directories and
git repositories under the test's own sources directory (the server's ``ARMILLARY_DEPLOY_SOURCES_DIR``).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from armillary.workflows.deploy import SOURCES_DIR_ENV
from tests.support.databases import database
from tests.support.jobs import act, act_and_wait, wait_job
from tests.support.provisioning import events, setup_ssh
from tests.support.sshhosts import SshHost, ssh_host
from tests.support.subprocess_server import ServerProcess

STEPS = ["prepare", "archive", "sync", "fixperms", "install", "fixperms_again", "switch", "verify"]


@pytest.fixture
def ssh_peer(tmp_path: Path) -> Iterator[SshHost]:
    with ssh_host(tmp_path) as host:
        yield host


@pytest.fixture
def sources(tmp_path: Path, server_settings) -> Path:
    """The server's sources directory (ARMILLARY_DEPLOY_SOURCES_DIR of the in-process server, for this test)."""
    directory = tmp_path / "sources"
    directory.mkdir()
    server_settings(deploy_sources_dir=directory)
    return directory


def write_tree(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()


def ready_system(api: httpx.Client, host: SshHost, config: dict[str, Any]) -> None:
    """``web1`` on ``host``, staged (ready), its type carrying the deploy configuration ``config``."""
    setup_ssh(api, host, scripts=[{"name": "noop", "inline": "true"}], env={})
    patched = api.patch("/types/web", json={"variables": {"deploy": config}})
    assert patched.status_code == 200, patched.text
    staged = act_and_wait(api, "web1", "stage")
    assert staged["status"] == "succeeded", staged


def project(host: SshHost) -> Path:
    return host.scratch / "apps" / "shop"


def current(host: SshHost) -> str:
    return os.readlink(project(host) / "current")


def deploy(api: httpx.Client, **params: Any) -> dict:
    response = act(api, "web1", "deploy", params=params)
    assert response.status_code == 202, response.text
    return wait_job(api, response.json()["id"], timeout_s=120)


def base_config(host: SshHost, **extra: Any) -> dict[str, Any]:
    return {"project": "shop", "root": str(host.scratch / "apps"), "source": {"path": "app"}, **extra}


APP = {
    ".armillary/10_build.sh": 'echo "building $ARMILLARY_RELEASE for $colour"\necho "$colour" > built\n',
    ".armillary/20_after.sh": 'test -f built\necho "after $ARMILLARY_STEP"\n',
    ".armillary/README": "not a step file\n",
    "bin/run": "#!/bin/sh\necho running\n",
    "index.html": "v1\n",
}


# ---------------------------------------------------------------- deploys


def test_deploy_from_git_succeeds_and_current_moves(api: httpx.Client, ssh_peer: SshHost, sources: Path) -> None:
    repo = write_tree(sources / "repo", APP)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    dumps = ssh_peer.scratch / "dumps.log"
    config = base_config(
        ssh_peer,
        source={"git": "repo", "ref": "main"},
        shared=["var/uploads"],
        perms={"owner": "root", "group": "root", "dir_mode": "0755", "file_mode": "0644",
               "modes": {"bin/run": "0750"}},
        hooks={"post_archive": f'echo dump > "$ARMILLARY_ARCHIVE_DIR/db.dump"\necho "$ARMILLARY_RELEASE" >> {dumps}'},
        health_check="test -f built && test -L var/uploads",
    )
    ready_system(api, ssh_peer, config)

    first = deploy(api)
    assert first["status"] == "succeeded", first
    assert [s["name"] for s in first["steps"]] == STEPS
    assert all(s["status"] == "succeeded" for s in first["steps"])
    release1 = first["context"]["release"]
    assert first["context"]["commit"] == git(repo, "rev-parse", "HEAD")
    assert current(ssh_peer) == f"releases/{release1}"
    live = project(ssh_peer) / "current"
    assert (live / "built").read_text() == "blue\n"  # resolved variables reach the step files
    assert not (live / ".git").exists()
    assert oct((live / "bin/run").stat().st_mode & 0o777) == "0o750"
    assert oct((live / "index.html").stat().st_mode & 0o777) == "0o644"
    assert os.readlink(live / "var/uploads") == str(project(ssh_peer) / "shared/var/uploads")
    logged = [(e["step"], e["message"]) for e in events(api, first["id"]) if e["kind"] == "log"]
    assert ("install", f"building {release1} for blue") in logged
    assert ("install", "after 20_after.sh") in logged
    assert ("archive", "no live release: nothing to archive") in logged
    assert api.get("/systems/web1").json()["state"] == "ready"

    (repo / "index.html").write_text("v2\n")
    git(repo, "commit", "-qam", "v2")
    second = deploy(api)
    assert second["status"] == "succeeded", second
    release2 = second["context"]["release"]
    assert release2 != release1 and second["context"]["previous"] == release1
    assert current(ssh_peer) == f"releases/{release2}"
    assert (live / "index.html").read_text() == "v2\n"
    archived = project(ssh_peer) / "archives" / release2
    assert (archived / "project" / "index.html").read_text() == "v1\n"  # the release live before it
    assert (archived / "db.dump").read_text() == "dump\n"
    assert dumps.read_text() == f"{release2}\n"


def test_failed_install_rolls_back(api: httpx.Client, ssh_peer: SshHost, sources: Path) -> None:
    app = write_tree(sources / "app", APP)
    marker = ssh_peer.scratch / "rollback.marker"
    ready_system(api, ssh_peer, base_config(ssh_peer, hooks={
        "rollback": f'echo "failed=$ARMILLARY_FAILED_RELEASE back=$ARMILLARY_RELEASE" > {marker}'}))
    good = deploy(api)
    assert good["status"] == "succeeded", good
    release1 = good["context"]["release"]

    write_tree(app, {".armillary/30_migrate.sh": "echo 'migrating'\necho 'db on fire' >&2\nexit 3\n",
                     "index.html": "v2\n"})
    bad = deploy(api)
    assert bad["status"] == "failed", bad
    release2 = bad["context"]["release"]
    error = bad["error"]
    assert error.startswith("install: step file 30_migrate.sh exited 3"), error
    assert "db on fire" in error and "rolled back" in error and f"current is {release1} again" in error, error
    assert bad["context"]["rolled_back"] is True
    assert [s["status"] for s in bad["steps"]][-4:] == ["failed", "cancelled", "cancelled", "cancelled"] or \
        {s["name"]: s["status"] for s in bad["steps"]}["install"] == "failed"
    assert current(ssh_peer) == f"releases/{release1}"
    assert (project(ssh_peer) / "current" / "index.html").read_text() == "v1\n"
    failed = project(ssh_peer) / "archives" / release2 / "project.failed"
    assert (failed / "index.html").read_text() == "v2\n" and (failed / "built").exists()
    assert not (project(ssh_peer) / "releases" / release2).exists()
    assert marker.read_text() == f"failed={release2} back={release1}\n"
    assert api.get("/systems/web1").json()["state"] == "ready"  # on its previous release, deployable again
    messages = [e["message"] for e in events(api, bad["id"]) if e["kind"] == "log"]
    assert "db on fire" in messages and any(m.startswith("✔ rolled back") for m in messages)

    listing = api.get("/systems/web1/releases").json()
    assert listing["current"] == release1
    assert {"id": release2, "failed": True} in listing["archives"]


def test_archive_rotation_keeps_n(api: httpx.Client, ssh_peer: SshHost, sources: Path) -> None:
    write_tree(sources / "app", APP)
    ready_system(api, ssh_peer, base_config(ssh_peer, keep=2))
    done = []
    for _ in range(4):
        job = deploy(api)
        assert job["status"] == "succeeded", job
        done.append(job["context"]["release"])
    archives = sorted(p.name for p in (project(ssh_peer) / "archives").iterdir())
    assert archives == sorted(done[-2:]), archives  # deploys 2-4 archived; the oldest archive rotated away
    assert current(ssh_peer) == f"releases/{done[-1]}"


def test_keep_counts_releases_besides_current(api: httpx.Client, ssh_peer: SshHost, sources: Path) -> None:
    """``keep: 1`` keeps one release besides ``current``: the one it replaced (so a rollback has somewhere
    to go), not one more; and one archive."""
    write_tree(sources / "app", APP)
    ready_system(api, ssh_peer, base_config(ssh_peer, keep=1))
    done = []
    for _ in range(3):
        job = deploy(api)
        assert job["status"] == "succeeded", job
        done.append(job["context"]["release"])
    releases = sorted(p.name for p in (project(ssh_peer) / "releases").iterdir() if not p.name.startswith("."))
    assert releases == sorted(done[-2:]), releases  # current and the release it replaced
    assert current(ssh_peer) == f"releases/{done[-1]}"
    archives = sorted(p.name for p in (project(ssh_peer) / "archives").iterdir())
    assert archives == [done[-1]], archives
    listing = api.get("/systems/web1/releases").json()
    assert listing["current"] == done[-1] and [r["id"] for r in listing["releases"]] == [done[2], done[1]]


def test_rollback_action_and_releases_listing(api: httpx.Client, ssh_peer: SshHost, sources: Path) -> None:
    app = write_tree(sources / "app", APP)
    marker = ssh_peer.scratch / "rollback.marker"
    ready_system(api, ssh_peer, base_config(ssh_peer, hooks={
        "rollback": f'echo "back=$ARMILLARY_RELEASE from=$ARMILLARY_ROLLED_BACK_FROM" > {marker}'}))
    releases = []
    for version in ("v1", "v2", "v3"):
        write_tree(app, {"index.html": f"{version}\n"})
        job = deploy(api, release=version)
        assert job["status"] == "succeeded", job
        releases.append(job["context"]["release"])
    assert releases == ["v1", "v2", "v3"]

    listing = api.get("/systems/web1/releases")
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["current"] == "v3" and body["project_dir"] == str(project(ssh_peer))
    assert body["releases"] == [{"id": "v3", "current": True}, {"id": "v2", "current": False},
                                {"id": "v1", "current": False}]

    back = act_and_wait(api, "web1", "rollback")
    assert back["status"] == "succeeded", back
    assert back["context"]["release"] == "v2" and back["context"]["rolled_back_from"] == "v3"
    assert current(ssh_peer) == "releases/v2"
    assert marker.read_text() == "back=v2 from=v3\n"
    named = act_and_wait(api, "web1", "rollback", params={"release": "v1"})
    assert named["status"] == "succeeded", named
    assert (project(ssh_peer) / "current" / "index.html").read_text() == "v1\n"
    assert api.get("/systems/web1/releases").json()["current"] == "v1"

    missing = act_and_wait(api, "web1", "rollback", params={"release": "v9"})
    assert missing["status"] == "failed" and "no release v9" in missing["error"]
    assert current(ssh_peer) == "releases/v1"
    bad = act(api, "web1", "rollback", params={"release": "../etc"})
    assert bad.status_code == 422, bad.text
    again = deploy(api, release="v1")  # a release id already there is refused, and the live one is untouched
    assert again["status"] == "failed" and "release v1 already exists" in again["error"], again
    assert current(ssh_peer) == "releases/v1" and (project(ssh_peer) / "releases/v1/index.html").exists()


# ---------------------------------------------------------------- task graphs


def test_task_graph_runs_in_order_and_in_parallel(api: httpx.Client, ssh_peer: SshHost, sources: Path) -> None:
    write_tree(sources / "app", APP)
    trace = ssh_peer.scratch / "trace"

    def task(name: str, *deps: str, wait_for: str = "") -> dict[str, Any]:
        # wait_for: a task that must be running at the same time (up to 30 s), else this one fails.
        body = f'echo "start {name} $(date +%s.%N)" >> {trace}\ntouch {trace}.{name}\n'
        if wait_for:
            body += f'i=0\nwhile [ ! -e {trace}.{wait_for} ]; do sleep 0.05; i=$((i+1)); [ $i -lt 600 ]; done\n'
        body += f'echo "end {name} $(date +%s.%N)" >> {trace}\n'
        return {"name": name, "run": body, "depends_on": list(deps)}

    tasks = [task("start", "post-update", "symlink"), task("post-update", "update-code", wait_for="symlink"),
             task("symlink", "update-code", wait_for="post-update"), task("update-code", "stop"), task("stop")]
    ready_system(api, ssh_peer, base_config(ssh_peer, tasks=tasks))
    job = deploy(api)
    assert job["status"] == "succeeded", job
    assert sorted(job["context"]["tasks"]) == sorted(t["name"] for t in tasks)
    seen = {}
    for line in trace.read_text().splitlines():
        what, name, at = line.split()
        seen[(what, name)] = float(at)
    assert seen[("end", "stop")] <= seen[("start", "update-code")]
    for middle in ("post-update", "symlink"):
        assert seen[("end", "update-code")] <= seen[("start", middle)] <= seen[("end", middle)] <= seen[("start", "start")]
    # Independent tasks ran at the same time: each waited for the other to have started.
    assert seen[("start", "symlink")] <= seen[("end", "post-update")]
    assert seen[("start", "post-update")] <= seen[("end", "symlink")]


def test_a_cycle_in_a_recipe_is_refused_before_anything_runs(
    api: httpx.Client, ssh_peer: SshHost, sources: Path
) -> None:
    write_tree(sources / "app", APP)
    ready_system(api, ssh_peer, base_config(ssh_peer))
    tasks = [{"name": "stop", "run": "true"}, {"name": "update-code", "run": "true", "depends_on": ["stop", "start"]},
             {"name": "start", "run": "true", "depends_on": ["update-code"]}]
    jobs_before = api.get("/jobs").json()["items"]
    refused = act(api, "web1", "deploy", params={"tasks": tasks})
    assert refused.status_code == 422, refused.text
    assert "dependency cycle: update-code → start → update-code" in refused.json()["detail"], refused.json()
    assert api.get("/jobs").json()["items"] == jobs_before  # no job was made
    assert not project(ssh_peer).exists()  # nothing ran on the target

    # The same cycle in the type's configuration is refused too.
    config = base_config(ssh_peer, tasks=tasks)
    assert api.patch("/types/web", json={"variables": {"deploy": config}}).status_code == 200
    refused = act(api, "web1", "deploy")
    assert refused.status_code == 422 and "dependency cycle" in refused.json()["detail"]
    assert not project(ssh_peer).exists()


# ---------------------------------------------------------------- a crash in the middle


def test_kill_mid_install_then_restart_leaves_current_complete(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    write_tree(sources / "app", {
        ".armillary/10_install.sh": 'if [ -n "${SLOW:-}" ]; then touch "$STARTED"; sleep "$SLOW"; fi\n'
                                    'echo complete > installed\n',
        "index.html": "v1\n",
    })
    with database("sqlite", tmp_path) as url, ssh_host(tmp_path) as host:
        env = {"ARMILLARY_DATABASE_URL": url, "ARMILLARY_LEASE_SECONDS": "2", SOURCES_DIR_ENV: str(sources)}
        started = host.scratch / "install.started"
        server = ServerProcess(tmp_path / "data", env).start()
        try:
            with server.client() as api:
                ready_system(api, host, base_config(host))
                first = deploy(api)
                assert first["status"] == "succeeded", first
                release1 = first["context"]["release"]
                write_tree(sources / "app", {"index.html": "v2\n"})
                response = act(api, "web1", "deploy", params={"env": {"SLOW": "4", "STARTED": str(started)}})
                assert response.status_code == 202, response.text
                job_id = response.json()["id"]
            deadline = time.monotonic() + 60
            while not started.exists():
                assert time.monotonic() < deadline, "the install never started"
                time.sleep(0.05)
        finally:
            server.kill()  # SIGKILL, mid-install
        assert current(host) == f"releases/{release1}"  # untouched while the new release was installing
        assert (project(host) / "current" / "installed").read_text() == "complete\n"

        restarted = ServerProcess(tmp_path / "data", env).start()
        try:
            with restarted.client() as api:
                done = wait_job(api, job_id, timeout_s=120)
                steps = {s["name"]: s for s in done["steps"]}
                live = current(host)
                # Whatever the outcome, current names a complete release and the job says which.
                assert (project(host) / live / "installed").read_text() == "complete\n"
                if done["status"] == "succeeded":
                    assert live == f"releases/{done['context']['release']}"
                    assert (project(host) / "current" / "index.html").read_text() == "v2\n"
                    assert steps["install"]["attempts"] == 2
                else:
                    assert live == f"releases/{release1}" and "rolled back" in done["error"], done
                assert done["status"] == "succeeded", done  # the install is retried, not abandoned
                assert api.get("/systems/web1").json()["state"] == "ready"
                assert all(s["lease_owner"] is None and s["status"] != "running" for s in done["steps"])
        finally:
            restarted.stop()


# ---------------------------------------------------------------- simulated machines


def test_simulated_deploy_says_nothing_real_is_deployed(api: httpx.Client) -> None:
    from tests.support.jobs import sim_setup

    sim_setup(api)
    assert act_and_wait(api, "s1", "stage")["status"] == "succeeded"
    job = act_and_wait(api, "s1", "deploy", params={"release": "v2"})
    assert job["status"] == "succeeded" and job["context"]["release"] == "v2"
    messages = [e["message"] for e in events(api, job["id"]) if e["kind"] == "log"]
    assert "simulated machine: release v2 recorded, nothing real deployed" in messages
    back = act_and_wait(api, "s1", "rollback")
    assert back["status"] == "succeeded", back
    assert api.get("/systems/s1/releases").json()["simulated"] is True


# ---------------------------------------------------------------- a source uploaded to the API


def test_deploy_from_an_uploaded_source(api: httpx.Client, ssh_peer: SshHost) -> None:
    import io
    import tarfile
    import uuid

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in {**APP, "index.html": f"uploaded {uuid.uuid4().hex}\n"}.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    body = buffer.getvalue()
    uploaded = api.post("/sources", content=body, headers={"Content-Type": "application/gzip"})
    assert uploaded.status_code == 201, uploaded.text
    source_id = uploaded.json()["id"]
    ready_system(api, ssh_peer, base_config(ssh_peer, source={"upload": source_id}))

    job = deploy(api)
    assert job["status"] == "succeeded", job
    assert job["context"]["upload"] == source_id
    live = project(ssh_peer) / "current"
    assert (live / "index.html").read_text().startswith("uploaded ")
    assert (live / "built").read_text() == "blue\n"  # its step files ran

    assert api.delete(f"/sources/{source_id}").status_code == 204
    gone = deploy(api)
    assert gone["status"] == "failed" and f"no uploaded source {source_id}" in gone["error"], gone
    assert current(ssh_peer) == f"releases/{job['context']['release']}"  # rolled back
    bad = act(api, "web1", "deploy", params={"source": {"upload": "../../etc/passwd"}})
    assert bad.status_code == 422, bad.text


# ---------------------------------------------------------------- an Ansible playbook as the install


PLAYBOOK = """\
- hosts: all
  gather_facts: false
  tasks:
    - name: record the release
      ansible.builtin.copy:
        dest: "{{ armillary_release_dir }}/from-ansible"
        content: "{{ colour }} {{ armillary_release }} {{ flavour }} {{ lookup('file', 'files/note') }}\\n"
        mode: "0644"
"""


def _need_ansible() -> None:
    import shutil
    import sys

    from tests.support.peers import missing_peer

    if shutil.which("ansible-playbook") is None and not (Path(sys.executable).parent / "ansible-playbook").exists():
        missing_peer("ansible-playbook (ansible-core) is not installed")


def test_install_runs_the_projects_playbook_and_a_failing_one_rolls_back(
    api: httpx.Client, ssh_peer: SshHost, sources: Path
) -> None:
    _need_ansible()
    app = write_tree(sources / "app", {"index.html": "v1\n", "deploy/site.yml": PLAYBOOK,
                                       "deploy/files/note": "from the release"})
    marker = ssh_peer.scratch / "rollback.marker"
    ready_system(api, ssh_peer, base_config(
        ssh_peer, install={"playbook": "deploy/site.yml", "extra_vars": {"flavour": "vanilla"}},
        hooks={"rollback": f'echo "failed=$ARMILLARY_FAILED_RELEASE" > {marker}'}))
    good = deploy(api)
    assert good["status"] == "succeeded", good
    release1 = good["context"]["release"]
    assert good["context"]["playbook"]["changed"] == 1 and good["context"]["playbook"]["failed"] == 0
    written = (project(ssh_peer) / "current" / "from-ansible").read_text()
    assert written == f"blue {release1} vanilla from the release\n"
    logged = [e["message"] for e in events(api, good["id"]) if e["kind"] == "log" and e["step"] == "install"]
    assert any(m.startswith("changed: [web1] record the release") for m in logged), logged

    write_tree(app, {"deploy/site.yml": PLAYBOOK + "    - ansible.builtin.fail:\n        msg: migration exploded\n",
                     "index.html": "v2\n"})
    bad = deploy(api)
    assert bad["status"] == "failed", bad
    release2 = bad["context"]["release"]
    assert bad["error"].startswith("install: ansible: task"), bad["error"]
    assert "migration exploded" in bad["error"] and f"current is {release1} again" in bad["error"]
    assert current(ssh_peer) == f"releases/{release1}"
    assert (project(ssh_peer) / "archives" / release2 / "project.failed" / "from-ansible").exists()
    assert marker.read_text() == f"failed={release2}\n"
    assert api.get("/systems/web1").json()["state"] == "ready"

    missing = deploy(api, install={"playbook": "deploy/nope.yml"})
    assert missing["status"] == "failed" and "no playbook deploy/nope.yml" in missing["error"], missing
    assert act(api, "web1", "deploy", params={"install": {"playbook": "../x.yml"}}).status_code == 422


# ---------------------------------------------------------------- steps that die by timeout or lease expiry


@contextmanager
def deploy_variant(name: str, fn: Any, timeout_s: float, attempts: int) -> Iterator[None]:
    """The in-process server's ``deploy`` workflow with step ``name`` replaced (restored afterwards)."""
    from armillary.workflows.deploy import deploy_step_spec
    from armillary.engine.workflows import Workflow, get_workflow, register

    original = get_workflow("deploy")
    steps = [deploy_step_spec(s.name, fn, s.depends_on[0], timeout_s, attempts) if s.name == name else s
             for s in original.steps]
    register(Workflow("deploy", steps, failure_state=original.failure_state, description=original.description))
    try:
        yield
    finally:
        register(original)


def test_a_step_overrunning_its_timeout_on_its_last_attempt_is_rolled_back(
    api: httpx.Client, ssh_peer: SshHost, sources: Path
) -> None:
    import threading

    from armillary.workflows import deploy as engine_deploy

    write_tree(sources / "app", APP)
    marker = ssh_peer.scratch / "rollback.marker"
    ready_system(api, ssh_peer, base_config(ssh_peer, hooks={"rollback": f'echo "$ARMILLARY_FAILED_RELEASE" > {marker}'}))
    first = deploy(api)
    assert first["status"] == "succeeded", first
    release1 = first["context"]["release"]

    # The body hangs (not in a command): the engine abandons it at the step's timeout, as a transient failure.
    unblock = threading.Event()

    def hung_install(run: Any) -> dict[str, Any]:
        run.ctx.log("install hangs")
        unblock.wait(60)
        return {}

    try:
        with deploy_variant("install", hung_install, timeout_s=10, attempts=1):
            hung = deploy(api)
    finally:
        unblock.set()
    assert hung["status"] == "failed", hung
    release2 = hung["context"]["release"]
    install = {s["name"]: s for s in hung["steps"]}["install"]
    assert install["attempts"] == 2, install  # one at the work, one that rolled back
    assert hung["error"].startswith("install: install did not complete in 1 attempt(s) (last: install timed out"), hung
    assert f"current is {release1} again" in hung["error"] and hung["context"]["rolled_back"] is True
    assert current(ssh_peer) == f"releases/{release1}"
    assert (project(ssh_peer) / "archives" / release2 / "project.failed").is_dir()
    assert marker.read_text() == f"{release2}\n"
    assert api.get("/systems/web1").json()["state"] == "ready"

    # A step file that runs out of the step's time: its command is stopped early enough to roll back.
    write_tree(sources / "app", {".armillary/30_slow.sh": "sleep 60\n"})
    with deploy_variant("install", engine_deploy.install, timeout_s=20, attempts=1):
        slow = deploy(api)
    assert slow["status"] == "failed", slow
    assert "step file 30_slow.sh timed out" in slow["error"] and f"current is {release1} again" in slow["error"], slow
    assert {s["name"]: s for s in slow["steps"]}["install"]["attempts"] == 1
    assert current(ssh_peer) == f"releases/{release1}"
    assert api.get("/systems/web1").json()["state"] == "ready"


def test_a_step_whose_worker_dies_on_every_attempt_is_rolled_back(tmp_path: Path) -> None:
    sources = tmp_path / "sources"
    write_tree(sources / "app", {
        ".armillary/10_install.sh": 'if [ -n "${SLOW:-}" ]; then touch "$STARTED"; sleep "$SLOW"; fi\n'
                                    'echo complete > installed\n',
        "index.html": "v1\n",
    })
    with database("sqlite", tmp_path) as url, ssh_host(tmp_path) as host:
        env = {"ARMILLARY_DATABASE_URL": url, "ARMILLARY_LEASE_SECONDS": "2", SOURCES_DIR_ENV: str(sources)}
        started = host.scratch / "install.started"
        marker = host.scratch / "rollback.marker"
        server = ServerProcess(tmp_path / "data", env).start()
        try:
            with server.client() as api:
                ready_system(api, host, base_config(host, hooks={"rollback": f'echo "$ARMILLARY_FAILED_RELEASE" > {marker}'}))
                first = deploy(api)
                assert first["status"] == "succeeded", first
                release1 = first["context"]["release"]
                write_tree(sources / "app", {"index.html": "v2\n"})
                response = act(api, "web1", "deploy", params={"env": {"SLOW": "30", "STARTED": str(started)}})
                assert response.status_code == 202, response.text
                job_id = response.json()["id"]
            _wait_for(started)
        finally:
            server.kill()  # SIGKILL during the install's first attempt
        for _ in range(1):  # its second (last) attempt dies the same way
            started.unlink()
            server = ServerProcess(tmp_path / "data", env).start()
            try:
                _wait_for(started)
            finally:
                server.kill()
        assert current(host) == f"releases/{release1}"

        restarted = ServerProcess(tmp_path / "data", env).start()
        try:
            with restarted.client() as api:
                done = wait_job(api, job_id, timeout_s=120)
                assert done["status"] == "failed", done
                release2 = done["context"]["release"]
                install = {s["name"]: s for s in done["steps"]}["install"]
                assert install["attempts"] == 3, install  # two at the work, both killed; one that rolled back
                assert done["error"].startswith("install: install did not complete in 2 attempt(s)"), done["error"]
                assert f"current is {release1} again" in done["error"] and done["context"]["rolled_back"] is True
                assert current(host) == f"releases/{release1}"
                assert (project(host) / "archives" / release2 / "project.failed").is_dir()
                assert marker.read_text() == f"{release2}\n"
                assert api.get("/systems/web1").json()["state"] == "ready"
        finally:
            restarted.stop()


def _wait_for(path: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)

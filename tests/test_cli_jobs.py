"""``armillary system ACTION``, ``jobs`` and ``schedule``, run as subprocesses against a real server.

One ``armillary serve --port 0`` subprocess serves the module; each test makes its own environment
and simulated hypervisor (``latency_ms`` keeps jobs running long enough to be followed live), and
its own hostnames and labels, since bulk selections see every system on the server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import Cli, Result, armillary_command, sign_in_admin
from tests.support.jobs import act_and_wait, wait_job
from tests.support.subprocess_server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ServerProcess]:
    running = ServerProcess(tmp_path_factory.mktemp("cli-jobs-server")).start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    """For setting up what a test starts from."""
    with server.client() as client:
        yield client


@pytest.fixture(scope="module")
def config_dir(server: ServerProcess, tmp_path_factory) -> Path:
    """The CLI's credentials: the admin, signed in with `armillary login` once for the module."""
    config = tmp_path_factory.mktemp("cli-jobs-config")
    sign_in_admin(server.url, config, {k: v for k, v in server.env.items() if k.startswith("ARMILLARY_")})
    return config


@pytest.fixture
def cli(server: ServerProcess, tmp_path: Path, config_dir: Path) -> Cli:
    return Cli(server.url, tmp_path, config_dir)


def on_terminal(cli: Cli, *args: str) -> Result:
    """``armillary ARGS`` as if stdout were a terminal (rich honours TTY_COMPATIBLE)."""
    done = subprocess.run(
        [*armillary_command(), *args],
        check=False,
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env=cli.environ(TTY_COMPATIBLE="1"),
    )
    return Result(args, done.returncode, done.stdout, done.stderr)


def setup_systems(
    api: httpx.Client, env: str, *hostnames: str, config: dict | None = None, labels: dict | None = None
) -> None:
    """An environment with a simulated hypervisor (100 ms per driver call) and systems on it."""
    assert api.post("/environments", json={"name": env}).status_code == 201
    config = {"latency_ms": 100, **(config or {})}
    hypervisor = {"name": f"{env}-sim", "environment": env, "driver": "simulated", "config": config}
    made = api.post("/hypervisors", json=hypervisor)
    assert made.status_code == 201, made.text
    for hostname in hostnames:
        system = {"hostname": hostname, "environment": env, "hypervisor": f"{env}-sim"}
        made = api.post("/systems", json={**system, "labels": labels or {}})
        assert made.status_code == 201, made.text


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def stored_event_ids(api: httpx.Client, job_id: int) -> list[int]:
    return [e["id"] for e in api.get(f"/jobs/{job_id}/events", params={"limit": 1000}).json()["items"]]


# ---------------------------------------------------------------- system ACTION


def test_stage_wait_shows_steps_and_a_checkmark(cli: Cli, api: httpx.Client, server: ServerProcess) -> None:
    setup_systems(api, "stagenv", "stage1", "stage2")

    # Not a terminal: one JSON event per line on stdout, the summary for people on stderr.
    piped = cli("system", "stage", "stage1", "--wait")
    assert piped.code == 0, piped
    events = json_lines(piped.out)
    steps = [(e["step"], e["data"]["status"]) for e in events if e.get("kind") == "step"]
    assert ("create_machine", "running") in steps and ("provision", "succeeded") in steps
    assert events[-1] == {
        "kind": "end",
        "job_id": events[0]["job_id"],
        "status": "succeeded",
        "error": None,
        "hosts": {"stage1": "succeeded"},
    }
    assert "✔ stage1: succeeded" in piped.err
    assert api.get("/systems/stage1").json()["state"] == "ready"

    # On a terminal: the log lines, the steps panel, and the summary.
    shown = on_terminal(cli, "system", "stage", "stage2", "--wait")
    assert shown.code == 0, shown
    assert "create_machine started (attempt 1/5)" in shown.out
    assert "stage2 running at 198.18." in shown.out  # a driver log line
    assert "· stage · succeeded" in shown.out  # the panel's title
    assert "✔ stage2: succeeded" in shown.out.splitlines()[-1]


def test_action_refused_by_the_state_exits_1_with_the_detail(cli: Cli, api: httpx.Client) -> None:
    setup_systems(api, "gonenv", "gone1")
    assert act_and_wait(api, "gone1", "stage")["status"] == "succeeded"
    assert act_and_wait(api, "gone1", "destroy")["status"] == "succeeded"
    refused = cli("system", "provision", "gone1")
    assert refused.code == 1, refused
    assert "(409)" in refused.err and "cannot provision a system that is destroyed" in refused.err
    assert "request id:" in refused.err and refused.out == ""


def test_failing_create_with_wait_exits_1_with_the_drivers_message(cli: Cli, api: httpx.Client) -> None:
    setup_systems(api, "failenv", "fail1", config={"fail_at": ["create"]})
    failed = cli("system", "create", "fail1", "--wait")  # HOSTNAME alone: the create action
    assert failed.code == 1, failed
    assert "simulated permanent failure of create (fail_at)" in failed.err
    assert "✗ fail1: failed" in failed.err
    assert json_lines(failed.out)[-1]["status"] == "failed"

    # Without --wait: the job, at once; and the action's own flags do not define systems.
    started = cli.json("system", "create", "fail1", "--idempotency-key", "fail1-retry")
    assert started["action"] == "create" and started["status"] in ("queued", "running")
    again = cli.json("system", "create", "fail1", "--idempotency-key", "fail1-retry")
    assert again["id"] == started["id"]
    wait_job(api, started["id"])
    mixed = cli("system", "create", "fail2", "--env", "failenv", "--wait")
    assert mixed.code == 2 and "HOSTNAME alone" in mixed.err
    unknown = cli("system", "create", "nosuchhost")
    assert unknown.code == 1 and "no system 'nosuchhost'" in unknown.err and "--env" in unknown.err


def test_queue_and_clone(cli: Cli, api: httpx.Client) -> None:
    setup_systems(api, "queueenv", "busy1", config={"latency_ms": 30000})  # holds its lock throughout
    holder = api.post("/systems/busy1/actions", json={"action": "stage"}).json()
    busy = cli("system", "deploy", "busy1")
    assert busy.code == 1 and "(409)" in busy.err and f"locked by job {holder['id']}" in busy.err
    queued = cli.json("system", "deploy", "busy1", "--queue", "--param", "release=v2")
    assert queued["waiting_for_lock"] is True and queued["params"] == {"release": "v2"}

    # Cancelling the job that waits: it ends at once, as `cancelled`.
    cancelled = cli("jobs", "cancel", str(queued["id"]))
    assert cancelled.code == 0, cancelled
    assert f"Cancel requested for job {queued['id']}" in cancelled.out
    watched = cli("jobs", "watch", str(queued["id"]))
    assert watched.code == 1, watched
    assert json_lines(watched.out)[-1]["status"] == "cancelled"
    assert f"job {queued['id']} cancelled" in watched.err
    again = cli("jobs", "cancel", str(queued["id"]))
    assert again.code == 1 and "(409)" in again.err and "already cancelled" in again.err

    setup_systems(api, "cloneenv", "orig1")
    assert act_and_wait(api, "orig1", "stage")["status"] == "succeeded"
    cloned = cli("system", "clone", "orig1", "copy1", "--wait")
    assert cloned.code == 0, cloned
    assert "✔ copy1: succeeded" in cloned.err
    assert api.get("/systems/copy1").json()["state"] == "ready"


# ---------------------------------------------------------------- jobs watch, list, show, cancel


def test_watch_json_lines_end_with_the_final_status(cli: Cli, api: httpx.Client) -> None:
    setup_systems(api, "watchenv", "watch1")
    job = api.post("/systems/watch1/actions", json={"action": "stage"}).json()
    watched = cli("jobs", "watch", str(job["id"]), "-o", "json")
    assert watched.code == 0, watched
    lines = json_lines(watched.out)
    assert [e["id"] for e in lines[:-1]] == stored_event_ids(api, job["id"])
    assert lines[-2]["kind"] == "job" and lines[-2]["data"]["status"] == "succeeded"
    assert lines[-1]["kind"] == "end" and lines[-1]["status"] == "succeeded"

    # A finished job replays; a job that does not exist is a 404.
    assert json_lines(cli("jobs", "watch", str(job["id"]), "-o", "json").out) == lines
    missing = cli("jobs", "watch", "999999")
    assert missing.code == 1 and "no job 999999" in missing.err


class DroppingProxy:
    """A TCP proxy to the server that cuts the first event stream after ``after`` events."""

    def __init__(self, url: str, after: int) -> None:
        target = httpx.URL(url)
        self.target = (target.host, target.port)
        self.after = after
        self.cut = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            both = (client, upstream)
            for src, dst, watch in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(src, dst, watch, both), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, watch: bool, both: tuple) -> None:
        seen = b""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if watch and not self.cut.is_set():
                    seen += data
                    start = seen.find(b"text/event-stream")
                    if start >= 0 and seen[start:].count(b"\nevent: ") >= self.after:
                        self.cut.set()
                        for sock in both:
                            sock.shutdown(socket.SHUT_RDWR)
                        return
        except OSError:
            pass
        finally:
            for sock in both:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def test_watch_resumes_after_a_dropped_connection(cli: Cli, api: httpx.Client, server: ServerProcess) -> None:
    setup_systems(api, "dropenv", "drop1", config={"latency_ms": 2000})  # still running at the cut
    job = api.post("/systems/drop1/actions", json={"action": "stage"}).json()
    proxy = DroppingProxy(server.url, after=3)
    try:
        # The login is stored for the server's own URL: through the proxy, the token goes by env.
        watched = cli("jobs", "watch", str(job["id"]), "-o", "json", url=proxy.url, env={"ARMILLARY_TOKEN": cli.token})
    finally:
        proxy.close()
    assert watched.code == 0, watched
    assert proxy.cut.is_set() and "reconnecting" in watched.err
    lines = json_lines(watched.out)
    assert [e["id"] for e in lines[:-1]] == stored_event_ids(api, job["id"])  # none twice, none lost
    assert lines[-1]["status"] == "succeeded"


def test_bulk_job_start_wait_list_and_show(cli: Cli, api: httpx.Client) -> None:
    setup_systems(api, "bulkenv", "bulk1", "bulk2", "bulk3", labels={"cell": "c1"})
    done = cli("jobs", "start", "create", "--label", "cell=c1", "--batch-size", "2", "--wait")
    assert done.code == 0, done
    end = json_lines(done.out)[-1]
    assert end["status"] == "succeeded"
    assert end["hosts"] == {"bulk1": "succeeded", "bulk2": "succeeded", "bulk3": "succeeded"}
    assert "✔ bulk2: succeeded" in done.err and "3 succeeded, 0 failed (of 3 systems)" in done.err

    children = cli.json("jobs", "list", "--parent", str(end["job_id"]))["items"]
    assert len(children) == 3 and {c["action"] for c in children} == {"create"}
    mine = cli.json("jobs", "list", "--system", "bulk1", "--status", "succeeded")["items"]
    assert [j["id"] for j in mine] == [c["id"] for c in children if c["system_id"] == mine[0]["system_id"]]
    table = cli.ok("jobs", "show", str(end["job_id"])).out
    assert "batch-1" in table and "batch-2" in table and "succeeded" in table and "ATTEMPTS" in table

    # A failure of one system, with --continue-on-failure: the job succeeds, the command does not.
    assert act_and_wait(api, "bulk3", "destroy")["status"] == "succeeded"
    partial = cli("jobs", "start", "provision", "--label", "cell=c1", "--continue-on-failure", "--wait")
    assert partial.code == 1, partial
    assert json_lines(partial.out)[-1]["status"] == "succeeded"
    assert "✗ bulk3: failed" in partial.err and "1 of 3 systems failed: bulk3" in partial.err

    nothing = cli("jobs", "start", "create")
    assert nothing.code == 2 and "select the systems" in nothing.err


# ---------------------------------------------------------------- schedules


def test_schedule_create_list_show_delete(cli: Cli) -> None:
    created = cli.json(
        "schedule", "create", "nightly", "--cron", "0 3 * * *", "--tz", "Europe/Paris",
        "--action", "stage", "--label", "cell=c9", "--concurrency", "5", "--batch-size", "2",
    )
    assert created["job"]["action"] == "stage" and created["job"]["selector"]["labels"] == {"cell": "c9"}
    assert created["job"]["concurrency"] == 5 and created["job"]["batch_size"] == 2
    assert created["timezone"] == "Europe/Paris" and created["enabled"] is True
    table = cli.ok("schedule", "list").out
    assert "nightly" in table and "0 3 * * *" in table and "cell=c9" in table
    assert cli.json("schedule", "show", "nightly")["id"] == created["id"]
    bad = cli("schedule", "create", "broken", "--cron", "not cron", "--action", "stage", "--label", "a=b")
    assert bad.code == 1 and "cron" in bad.err
    assert "Deleted schedule nightly." in cli.ok("schedule", "delete", "nightly").out
    assert cli.json("schedule", "list")["items"] == []

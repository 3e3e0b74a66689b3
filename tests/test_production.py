"""Running Armillary in production: several processes, signals, systemd units, the container image.

Everything here is a real ``armillary serve`` process (or a real container), driven with real signals:

* ``--workers N`` runs N engines on PostgreSQL, and refuses SQLite;
* SIGTERM lets running steps finish for ARMILLARY_SHUTDOWN_TIMEOUT, then hands back the leases of the
  ones still running, so a restarted server retries them at once rather than after a full lease;
* SIGHUP re-reads the environment file: logging and LDAP change without a restart;
* the systemd units of contrib/systemd pass ``systemd-analyze verify``;
* the Containerfile builds from a local Debian base and runs as a non-root user with its data on a
  volume (marked ``slow``: a few minutes the first time, while debootstrap fills the cache).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import postgres_database
from tests.support.jobs import wait_job
from tests.support.peers import missing_peer
from tests.support.subprocess_server import ARMILLARY, ServerProcess

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib" / "systemd"


@pytest.fixture
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout_s:g}s"
        time.sleep(0.05)


def terminate(server: ServerProcess, timeout_s: float) -> float:
    """SIGTERM, as systemd and podman stop a service; seconds until the process was gone."""
    assert server.proc is not None
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        server.kill()
        pytest.fail(f"the server was still running {timeout_s:g}s after SIGTERM:\n" + "".join(server.output[-40:]))
    return time.monotonic() - started


# ------------------------------------------------------------------ --workers


def test_several_workers_refuse_sqlite_naming_postgresql(tmp_path: Path) -> None:
    env = {**os.environ, "ARMILLARY_DATA_DIR": str(tmp_path), "ARMILLARY_SECRET_KEY": "k"}
    env.pop("ARMILLARY_DATABASE_URL", None)
    done = subprocess.run([ARMILLARY, "serve", "--port", "0", "--workers", "2"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2, done
    assert "PostgreSQL" in done.stderr and "ARMILLARY_DATABASE_URL" in done.stderr, done.stderr
    assert "listening" not in done.stdout


def test_several_workers_share_the_socket_and_each_runs_an_engine(pg_url: str, tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, {"ARMILLARY_DATABASE_URL": pg_url, "PROMETHEUS_MULTIPROC_DIR": ""},
                           args=("--workers", "2")).start()
    try:
        wait_until(lambda: len(re.findall(r"engine started as worker", "".join(server.output))) == 2, 30,
                   "both processes starting their engine")
        pids = set(re.findall(r"Started server process \[(\d+)\]", "".join(server.output)))
        assert len(pids) == 2, server.output
        # prometheus_client's multiprocess mode gets one fresh directory, under the data directory.
        shared = list(data.glob("prometheus-*"))
        assert len(shared) == 1 and shared[0].is_dir()
        with server.client() as api:
            api.post("/environments", json={"name": "dev"}).raise_for_status()
            api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated"}
                     ).raise_for_status()
            ids = [api.post("/systems", json={"hostname": f"w{n}", "environment": "dev", "hypervisor": "sim"}
                            ).json()["id"] for n in range(4)]
            jobs = [api.post(f"/systems/{i}/actions", json={"action": "create"}).json()["id"] for i in ids]
            assert [wait_job(api, j, 60)["status"] for j in jobs] == ["succeeded"] * 4
        terminate(server, 30)
        assert list(data.glob("prometheus-*")) == []  # the supervisor removes the directory it made
    finally:
        server.kill()


# ------------------------------------------------------------------ SIGTERM


def test_sigterm_hands_back_a_step_that_outlasts_the_shutdown_timeout(tmp_path: Path) -> None:
    """A create whose driver call takes 20 s; the shutdown timeout is 2 s and the lease 120 s."""
    env = {"ARMILLARY_SHUTDOWN_TIMEOUT": "2", "ARMILLARY_LEASE_SECONDS": "120"}
    server = ServerProcess(tmp_path / "data", env).start()
    try:
        with server.client() as api:
            api.post("/environments", json={"name": "dev"}).raise_for_status()
            hypervisor = api.post("/hypervisors", json={"name": "sim", "environment": "dev", "driver": "simulated",
                                                        "config": {"latency_ms": 20_000}}).json()
            system = api.post("/systems", json={"hostname": "slow", "environment": "dev", "hypervisor": "sim"}).json()
            job = api.post(f"/systems/{system['id']}/actions", json={"action": "create"}).json()

            def create_running() -> bool:
                steps = api.get(f"/jobs/{job['id']}").json()["steps"]
                return any(s["name"] == "create_machine" and s["status"] == "running" for s in steps)

            wait_until(create_running, 30, "the create step starting")
            # The call under way keeps its 20 s; the retry will find a fast hypervisor.
            api.patch(f"/hypervisors/{hypervisor['id']}", json={"config": {"latency_ms": 0}}).raise_for_status()
        took = terminate(server, 2 + 8)
        assert took < 2 + 5, f"SIGTERM took {took:.1f}s to stop the server with a 2s shutdown timeout"
    finally:
        server.kill()

    restarted = ServerProcess(tmp_path / "data", env).start()
    try:
        with restarted.client() as api:
            started = time.monotonic()
            done = wait_job(api, job["id"], timeout_s=30)
            assert done["status"] == "succeeded", done
            assert time.monotonic() - started < 15  # not after the 120 s lease
            create = next(s for s in done["steps"] if s["name"] == "create_machine")
            assert create["attempts"] == 2 and create["lease_owner"] is None
            messages = [e["message"] for e in api.get(f"/jobs/{job['id']}/events").json()["items"]]
            assert any("handed back" in m for m in messages), messages
    finally:
        restarted.stop()


# ------------------------------------------------------------------ SIGHUP


def test_sighup_reloads_logging_and_ldap_from_the_env_file(tmp_path: Path) -> None:
    env_file = tmp_path / "armillary.env"
    env_file.write_text("ARMILLARY_LOG_FORMAT=text\nARMILLARY_LOG_LEVEL=warning\n")
    server = ServerProcess(tmp_path / "data", {"ARMILLARY_ENV_FILE": str(env_file)}).start()
    try:
        def login(name: str) -> int:
            return httpx.post(server.url + "/api/v1/auth/login", json={"username": name, "password": "whatever"},
                              timeout=30).status_code

        assert login("nobody1") == 401  # local accounts only
        time.sleep(0.5)
        assert not any("/auth/login" in line for line in server.output)  # its access line is info: not shown

        # An unreachable directory: logins must now go to it (503), and log lines are JSON from now on.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        env_file.write_text("ARMILLARY_LOG_FORMAT=json\nARMILLARY_LOG_LEVEL=info\n"
                            f"ARMILLARY_LDAP_URL=ldap://127.0.0.1:{closed_port}\nARMILLARY_LDAP_TIMEOUT=2\n"
                            "ARMILLARY_LDAP_USER_DN_TEMPLATE=uid={username},ou=people,dc=example,dc=org\n")
        seen = len(server.output)
        server.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any("SIGHUP: reloaded" in line for line in server.output[seen:]), 10, "the reload")
        assert login("nobody2") == 503

        def access_line_in_json() -> bool:  # the audit line of the same request may come first: wait for this one
            return any(line.startswith("{") and json.loads(line).get("level") == "info"
                       and json.loads(line).get("path") == "/api/v1/auth/login" for line in server.output[seen:])

        wait_until(access_line_in_json, 10, "the login's access line (level info), in JSON")
        after = [line for line in server.output[seen:] if line.strip()]
        records = [json.loads(line) for line in after if line.startswith("{")]
        assert len(records) == len(after), after  # every line is JSON now
        assert server.proc.poll() is None  # reloaded in place, not restarted
    finally:
        server.stop()


def test_sighup_with_several_workers_reloads_every_process(pg_url: str, tmp_path: Path) -> None:
    env_file = tmp_path / "armillary.env"
    env_file.write_text("ARMILLARY_LOG_FORMAT=text\n")
    server = ServerProcess(tmp_path / "data", {"ARMILLARY_DATABASE_URL": pg_url, "ARMILLARY_ENV_FILE": str(env_file)},
                           args=("--workers", "2")).start()
    try:
        wait_until(lambda: "".join(server.output).count("engine started as worker") == 2, 30, "both engines")
        env_file.write_text("ARMILLARY_LOG_FORMAT=json\n")
        server.proc.send_signal(signal.SIGHUP)

        def reloaded() -> list[dict]:
            return [json.loads(line) for line in server.output if line.startswith("{") and "SIGHUP: reloaded" in line]

        wait_until(lambda: len(reloaded()) == 2, 15, "both processes reloading, in JSON")
        assert server.proc.poll() is None
        assert "".join(server.output).count("engine started as worker") == 2  # no process was restarted
        terminate(server, 30)
    finally:
        server.kill()


# ------------------------------------------------------------------ systemd units


def _uncommented(text: str) -> str:
    """A template unit's directives (``#Key=`` / ``#[Section]``, no space after ``#``), uncommented."""
    return re.sub(r"(?m)^#(?=[\[A-Za-z])", "", text)


def test_systemd_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        missing_peer("systemd-analyze is not installed (scripts/peers/container.sh installs Debian's systemd)")
    # verify checks that the commands exist: point them at this checkout's armillary instead of /opt's.
    names = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text()
        if "\nExecStart=" not in text:
            text = _uncommented(text)  # a template of a command to come: valid once uncommented
        (tmp_path / unit.name).write_text(text.replace("/opt/armillary/bin/armillary", ARMILLARY))
        names.append(unit.name)
    assert {"armillary.service", "armillary-worker.service", "armillary-bot.service"} <= set(names)
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in names)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stderr.strip() == "" and done.stdout.strip() == "", done
    server = (UNITS / "armillary.service").read_text()
    for directive in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/var/lib/armillary",
                      "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=\n",
                      "EnvironmentFile=/etc/armillary/armillary.env", "ExecStartPre=/opt/armillary/bin/armillary doctor",
                      "ExecReload=/bin/kill -HUP $MAINPID"):
        assert directive in server, directive
    assert "--workers" in (UNITS / "armillary-worker.service").read_text()


def test_example_env_file_is_read_by_serve_as_systemd_reads_it() -> None:
    from armillary.cli.server import read_env_file
    from armillary.config import Settings

    values = read_env_file(UNITS / "armillary.env.example")
    settings = Settings.from_env(values)
    assert settings.database_url.startswith("postgresql://")
    assert settings.shutdown_timeout_s == 30 and settings.log_format == "json"


# ------------------------------------------------------------------ the container image


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_container_image_runs_as_non_root_and_keeps_its_data_on_the_volume(tmp_path: Path) -> None:
    from tests.support.containers import build_mounts, podman_with_base

    podman = podman_with_base()
    image = "localhost/armillary/server:test"
    podman("build", "--network", "host", *build_mounts(tmp_path), "-f", str(ROOT / "Containerfile"), "-t", image,
           str(ROOT), timeout=900)
    name, volume = f"armillary-test-{os.getpid()}", f"armillary-test-data-{os.getpid()}"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            return httpx.get(url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    podman("volume", "create", volume)
    try:
        # The host's network (no network set-up of podman's own); the image's command, only the port moved.
        podman("run", "-d", "--name", name, "--network", "host", "-v", f"{volume}:/var/lib/armillary", image,
               "armillary", "serve", "--host", "0.0.0.0", "--port", str(port))
        wait_until(ready, 60, "the container's /readyz")
        assert podman("exec", name, "id", "-u").stdout.strip() != "0"
        owner = podman("top", name, "user", "args").stdout
        assert "armillary serve" in owner and "root" not in owner, owner
        podman("exec", name, "armillary", "admin", "create-user", "admin", "--admin", "--password", "a-long-password")
        token = httpx.post(url + "/api/v1/auth/login", json={"username": "admin", "password": "a-long-password"},
                           timeout=30).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(url + "/api/v1/environments", json={"name": "kept"}, headers=headers, timeout=30)
        assert created.status_code == 201, created.text

        # A new container on the same volume: what was created lives there, not in the container.
        podman("stop", "--time", "40", name)
        podman("rm", name)
        podman("run", "-d", "--name", name, "--network", "host", "-v", f"{volume}:/var/lib/armillary", image,
               "armillary", "serve", "--host", "0.0.0.0", "--port", str(port))
        wait_until(ready, 60, "the new container's /readyz")
        kept = httpx.get(url + "/api/v1/environments/kept", headers=headers, timeout=30)
        assert kept.status_code == 200 and kept.json()["name"] == "kept", kept.text
    finally:
        podman("rm", "--force", "--time", "0", name, check=False)
        podman("volume", "rm", "--force", volume, check=False)

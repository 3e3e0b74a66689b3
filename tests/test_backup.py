"""``armillary backup`` / ``armillary restore`` against real server processes, on SQLite and PostgreSQL.

A server with systems, a finished job, a hypervisor holding a secret and an audit trail is backed up
while it runs; the backup is restored into a fresh data directory and database, and a server started
on them must show the same inventory, jobs and trail, and still decrypt the hypervisor's secret.
"""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from armillary.domain.models import Hypervisor
from armillary.domain.secrets import SecretBox
from tests.support.cli import armillary_command, clean_env
from tests.support.databases import database, postgres_database
from tests.support.jobs import act_and_wait, sim_setup
from tests.support.subprocess_server import ServerProcess

REGISTRY_PASSWORD = "registry-password-7f3a"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def databases(backend: str, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """A maker of fresh, empty databases of the backend, one per data directory name."""
    with ExitStack() as stack:
        def make(name: str) -> str:
            (tmp_path / name).mkdir(exist_ok=True)
            if backend == "sqlite":
                return stack.enter_context(database("sqlite", tmp_path / name))
            return stack.enter_context(postgres_database())
        yield make


def server_env(url: str, **extra: str) -> dict[str, str]:
    # ARMILLARY_SECRET_KEY empty: the key file of the data directory is the key, as on a default install.
    return {"ARMILLARY_DATABASE_URL": url, "ARMILLARY_SECRET_KEY": "", **extra}


def cli(data_dir: Path, url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = clean_env(ARMILLARY_DATA_DIR=str(data_dir), ARMILLARY_DATABASE_URL=url, **env)
    return subprocess.run([*armillary_command(), *args], env=environment, capture_output=True, text=True,
                          timeout=120, check=False)


def populate(server: ServerProcess) -> dict:
    """Systems, a finished create job, a hypervisor with a secret; every request is an audit row."""
    with server.client() as api:
        sim_setup(api, systems=("web1", "web2"))
        job = act_and_wait(api, "web1", "create")
        assert job["status"] == "succeeded", job
        made = api.post("/hypervisors", json={"name": "dock", "environment": "dev", "driver": "docker",
                                              "config": {"registry_password": REGISTRY_PASSWORD}})
        assert made.status_code == 201, made.text
        return snapshot(api)


def snapshot(api) -> dict:
    systems = api.get("/systems").json()["items"]
    jobs = api.get("/jobs").json()["items"]
    audit = api.get("/audit", params={"limit": 1000}).json()["items"]
    return {
        "systems": sorted((s["id"], s["hostname"], s["state"]) for s in systems),
        "jobs": sorted((j["id"], j["action"], j["status"]) for j in jobs),
        "audit": {(a["id"], a["method"], a["path"], a["status"]) for a in audit},
        "hypervisor": next(h for h in api.get("/hypervisors").json()["items"] if h["name"] == "dock"),
    }


def stored_secret(url: str, key: str) -> dict:
    """The docker hypervisor's secrets as the engine reads them: decrypted with ``key``."""
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            token = conn.execute(select(Hypervisor.secret_config).where(Hypervisor.name == "dock")).scalar_one()
    finally:
        engine.dispose()
    return SecretBox(key).decrypt(token)


def test_backup_while_running_then_restore_into_a_fresh_installation(databases, tmp_path: Path) -> None:
    source_url, source_dir = databases("source"), tmp_path / "source"
    server = ServerProcess(source_dir, server_env(source_url)).start()
    try:
        before = populate(server)
        backup = tmp_path / "armillary-backup.tar.gz"
        made = cli(source_dir, source_url, "backup", str(backup))  # the server is still running
        assert made.returncode == 0, made.stderr
        assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # it holds the key
    finally:
        server.stop()
    key = (source_dir / "secret.key").read_text()

    target_url, target_dir = databases("target"), tmp_path / "target"
    restored = cli(target_dir, target_url, "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    key_file = target_dir / "secret.key"
    assert key_file.read_text() == key and stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stored_secret(target_url, key_file.read_text()) == {"registry_password": REGISTRY_PASSWORD}

    server = ServerProcess(target_dir, server_env(target_url)).start()
    try:
        with server.client() as api:
            after = snapshot(api)
            assert after["systems"] == before["systems"] and after["jobs"] == before["jobs"]
            assert before["audit"] <= after["audit"]  # every row of the trail, plus this server's own
            assert after["hypervisor"]["secrets_set"] == ["registry_password"]
            # A settings change decrypts the stored secrets and encrypts them again with the server's key.
            changed = api.patch(f"/hypervisors/{after['hypervisor']['id']}", json={"config": {"timeout_s": 30}})
            assert changed.status_code == 200, changed.text
            assert act_and_wait(api, "web2", "create")["status"] == "succeeded"  # the engine runs on it
    finally:
        server.stop()
    assert stored_secret(target_url, key) == {"registry_password": REGISTRY_PASSWORD}

    # Restoring again over the now non-empty database is refused, and needs --force.
    again = cli(target_dir, target_url, "restore", str(backup))
    assert again.returncode == 1 and "not empty" in again.stderr and "--force" in again.stderr
    forced = cli(target_dir, target_url, "restore", "--force", str(backup))
    assert forced.returncode == 0, forced.stderr


def test_without_key_needs_the_key_from_elsewhere(databases, tmp_path: Path) -> None:
    source_url, source_dir = databases("source"), tmp_path / "source"
    server = ServerProcess(source_dir, server_env(source_url)).start()
    try:
        populate(server)
        backup = tmp_path / "no-key.tar.gz"
        made = cli(source_dir, source_url, "backup", "--without-key", str(backup))
        assert made.returncode == 0, made.stderr
        assert "ARMILLARY_SECRET_KEY" in made.stderr  # says where the key must come from
    finally:
        server.stop()
    key = (source_dir / "secret.key").read_text()

    target_url, target_dir = databases("target"), tmp_path / "target"
    missing = cli(target_dir, target_url, "restore", str(backup))
    assert missing.returncode == 1
    assert "no secret key" in missing.stderr and "ARMILLARY_SECRET_KEY" in missing.stderr
    wrong = cli(target_dir, target_url, "restore", str(backup), ARMILLARY_SECRET_KEY="not-the-key")
    assert wrong.returncode == 1 and "is not the key" in wrong.stderr
    assert not (target_dir / "secret.key").exists()
    assert stored_secret_table_absent(target_url)  # refused before the database was touched

    restored = cli(target_dir, target_url, "restore", str(backup), ARMILLARY_SECRET_KEY=key)
    assert restored.returncode == 0, restored.stderr
    assert not (target_dir / "secret.key").exists()  # the key stays in the environment
    server = ServerProcess(target_dir, server_env(target_url, ARMILLARY_SECRET_KEY=key)).start()
    try:
        with server.client() as api:
            hypervisor = next(h for h in api.get("/hypervisors").json()["items"] if h["name"] == "dock")
            changed = api.patch(f"/hypervisors/{hypervisor['id']}", json={"config": {"timeout_s": 30}})
            assert changed.status_code == 200, changed.text
    finally:
        server.stop()
    assert stored_secret(target_url, key) == {"registry_password": REGISTRY_PASSWORD}


def test_restore_never_overwrites_a_different_key_file(databases, tmp_path: Path) -> None:
    source_url, source_dir = databases("source"), tmp_path / "source"
    server = ServerProcess(source_dir, server_env(source_url)).start()
    try:
        populate(server)
    finally:
        server.stop()
    backup = tmp_path / "backup.tar.gz"
    assert cli(source_dir, source_url, "backup", str(backup)).returncode == 0

    target_url, target_dir = databases("target"), tmp_path / "target"
    other_key = target_dir / "secret.key"
    other_key.write_text("another installation's key")
    refused = cli(target_dir, target_url, "restore", str(backup))
    assert refused.returncode == 1
    assert str(other_key) in refused.stderr and str(backup) in refused.stderr
    assert other_key.read_text() == "another installation's key"


def stored_secret_table_absent(url: str) -> bool:
    from sqlalchemy import inspect

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        return "hypervisors" not in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_backup_of_a_database_without_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    Path(tmp_path / "empty.db").touch()
    failed = cli(tmp_path, url, "backup", str(tmp_path / "b.tar.gz"))
    assert failed.returncode == 1 and "no Armillary schema" in failed.stderr
    assert not (tmp_path / "b.tar.gz").exists()

"""``armillary doctor`` against real databases (a temporary SQLite data directory, a fresh PostgreSQL one).

A Python extra that is "missing" is made so by putting None in ``sys.modules`` for the length of one
in-process run (its import then fails as a missing package's would): every extra is installed here. A
broken plugin is a real third-party distribution made in a temporary directory (its dist-info and entry
point) whose module fails to import; the doctor runs in a subprocess that sees it on its path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from armillary.cli.main import app
from armillary.domain import migrate
from armillary.domain.db import Database
from armillary.domain.models import Environment, Hypervisor, SystemType
from tests.support.databases import database

BACKENDS = ["sqlite", "postgresql"]


def run_doctor(env: dict[str, str]) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["doctor"], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture(params=BACKENDS)
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[dict[str, str], Database]]:
    """Settings (as environment variables) of a data directory whose database is at the head revision."""
    with database(request.param, tmp_path) as url:
        db = Database(url)
        migrate.upgrade(db)
        try:
            yield {"ARMILLARY_DATA_DIR": str(tmp_path), "ARMILLARY_DATABASE_URL": url}, db
        finally:
            db.dispose()


def test_a_fresh_data_dir_is_told_to_migrate_and_left_as_it_was(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    code, output = run_doctor({"ARMILLARY_DATA_DIR": str(data_dir), "ARMILLARY_DATABASE_URL": ""})
    assert code == 1, output
    assert "✗" in output and "does not exist yet" in output and "armillary migrate" in output
    assert not data_dir.exists()  # looking changes nothing


def test_a_migrated_database_with_every_extra_is_in_order(migrated: tuple[dict[str, str], Database]) -> None:
    env, _db = migrated
    code, output = run_doctor(env)
    assert code == 0, output
    assert "reachable" in output and "schema current" in output
    assert "drivers: aws, docker, libcloud, libvirt, lxc, proxmox, simulated, ssh, vsphere" in output
    assert "transports: docker-exec, local, lxc-attach, ssh" in output
    assert "provisioners: ansible, puppet, salt, script" in output
    assert "✔ aws: boto3" in output and "✔ docker: docker" in output and "✗" not in output


def test_a_schema_behind_the_head_is_a_problem(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'armillary.db'}"
    db = Database(url)
    with db.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE placeholder (id INTEGER)")  # a database, never migrated
    db.dispose()
    code, output = run_doctor({"ARMILLARY_DATA_DIR": str(tmp_path), "ARMILLARY_DATABASE_URL": url})
    assert code == 1, output
    assert "reachable" in output and "schema at nothing" in output and "run `armillary migrate`" in output


def test_an_unreachable_database_is_a_problem(tmp_path: Path) -> None:
    url = "postgresql+psycopg://nobody@127.0.0.1:9/armillary"  # the discard port: nothing listens
    code, output = run_doctor({"ARMILLARY_DATA_DIR": str(tmp_path), "ARMILLARY_DATABASE_URL": url})
    assert code == 1, output
    assert "cannot connect" in output and "nobody@127.0.0.1:9" in output


def test_a_missing_extra_is_a_problem_only_once_something_uses_it(
    migrated: tuple[dict[str, str], Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, db = migrated
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if `armillary[aws]` were not installed
    monkeypatch.setitem(sys.modules, "ansible_runner", None)  # nor `armillary[ansible]`
    code, output = run_doctor(env)
    assert code == 0, output  # nothing uses them: warnings
    assert "! aws: not installed" in output and "pip install 'armillary[aws]'" in output
    assert "! ansible: not installed" in output and "pip install 'armillary[ansible]'" in output
    assert "pip install 'armillary[all]'" in output

    with db.session() as session:
        env_row = Environment(name="dev")
        session.add(env_row)
        session.flush()
        session.add(Hypervisor(name="ec2", environment_id=env_row.id, driver="aws"))
        session.add(Hypervisor(name="gone", environment_id=env_row.id, driver="no-such-driver"))
        session.add(SystemType(name="web", provisioner_kind="ansible"))
    code, output = run_doctor(env)
    assert code == 1, output
    assert (
        "✗ aws: missing, and needed by hypervisor ec2" in output and "pip install 'armillary[aws]'" in output
    )
    assert "✗ ansible: missing, and needed by type web" in output
    assert "✗ driver no-such-driver is used by hypervisor gone but is not installed" in output
    assert "✔ driver aws: used by hypervisor ec2" in output


def test_a_broken_plugin_is_reported_by_the_doctor_and_the_drivers_api(
    migrated: tuple[dict[str, str], Database], tmp_path: Path
) -> None:
    env, _db = migrated
    site = tmp_path / "site"
    (site / "armillary_broken_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "armillary_broken_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: armillary-broken-plugin\nVersion: 0.1\n"
    )
    (site / "armillary_broken_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[armillary.drivers]\nbrokenhv = armillary_broken_plugin:Driver\n"
    )
    (site / "armillary_broken_plugin.py").write_text('raise ImportError("needs libbroken.so.1")\n')
    child_env = {
        **os.environ,
        **env,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }

    doctor = subprocess.run(
        [sys.executable, "-m", "armillary", "doctor"],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert (
        "✗ driver brokenhv is installed but failed to load: ImportError: needs libbroken.so.1"
        in doctor.stdout
    )
    assert "drivers: aws, docker, libcloud, libvirt, lxc, proxmox, simulated, ssh, vsphere" in doctor.stdout  # the rest load

    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from armillary.api.drivers import list_drivers; "
            "print(json.dumps(list_drivers(access=None)))",
        ],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert listing.returncode == 0, listing.stderr
    entries = json.loads(listing.stdout)
    assert [e["name"] for e in entries if not e.get("broken")] == [
        "aws",
        "docker",
        "libcloud",
        "libvirt",
        "lxc",
        "proxmox",
        "simulated",
        "ssh",
        "vsphere",
    ]
    assert [e for e in entries if e.get("broken")] == [
        {"name": "brokenhv", "kind": "driver", "broken": True, "reason": "ImportError: needs libbroken.so.1"}
    ]

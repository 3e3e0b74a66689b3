"""Audit rows carry what their request changed (old/new, secrets as "changed"); a resource's history; pruning.

API tests run on SQLite and PostgreSQL (the ``api`` fixture); the listener's transaction rules
(rollbacks and savepoints forget their changes) are checked directly on a SQLite database.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from armillary.auth import audit
from armillary.domain import audit_changes
from armillary.domain.accounts import AuditChange, AuditEvent, AuditPrunePermit
from armillary.domain.audit_changes import MAX_RESOURCES, MAX_VALUE_CHARS, Change
from armillary.domain.db import Database
from armillary.domain.migrate import upgrade
from armillary.domain.models import Environment, System, SystemLabel
from tests.support.accounts import TEST_PASSWORDS, bearer, ensure_user, token_for
from tests.support.cli import Cli

SECRET_ONE, SECRET_TWO = "s3cr3t-value-one", "s3cr3t-value-two"


def row_of(api: httpx.Client, request_id: str) -> dict:
    rows = api.get("/audit", params={"request_id": request_id}).json()["items"]
    assert len(rows) == 1, rows
    return rows[0]


def call(api: httpx.Client, method: str, path: str, request_id: str, **kwargs) -> httpx.Response:
    response = api.request(method, path, headers={"X-Request-ID": request_id}, **kwargs)
    assert response.status_code < 400, response.text
    return response


def test_patch_records_old_and_new_of_the_changed_fields_only(api: httpx.Client) -> None:
    api.post("/environments", json={"name": "dev"})
    system = api.post("/systems", json={"hostname": "web1", "environment": "dev", "machine": {"cpu": 1, "os": "debian"},
                                        "labels": {"role": "web", "cell": "c1"}}).json()
    call(api, "PATCH", f"/systems/{system['id']}", "chg-patch",
         json={"machine": {"cpu": 2}, "labels": {"role": "db", "cell": "c1", "rack": "r7"}})
    row = row_of(api, "chg-patch")
    assert row["changes"] == [{
        "resource_type": "systems", "resource_id": str(system["id"]), "op": "update",
        "fields": {"cpu": {"old": 1, "new": 2},
                   "system_labels.role": {"old": "web", "new": "db"},
                   "system_labels.rack": {"old": None, "new": "r7"}},
    }]  # os, cell, version, updated_at: unchanged or bookkeeping, so absent


def test_create_and_delete_carry_new_and_old_values(api: httpx.Client) -> None:
    made = call(api, "POST", "/environments", "chg-create", json={"name": "qa", "description": "for tests"}).json()
    (change,) = row_of(api, "chg-create")["changes"]
    assert change["resource_type"] == "environments" and change["resource_id"] == str(made["id"])
    assert change["op"] == "create"
    assert change["fields"]["name"] == {"new": "qa"} and change["fields"]["description"] == {"new": "for tests"}
    assert all(set(v) == {"new"} for v in change["fields"].values())
    call(api, "DELETE", f"/environments/{made['id']}", "chg-delete")
    (gone,) = row_of(api, "chg-delete")["changes"]
    assert gone["op"] == "delete" and gone["fields"]["name"] == {"old": "qa"}
    assert all(set(v) == {"old"} for v in gone["fields"].values())
    # A refused request changed nothing, and says so.
    refused = api.post("/environments", json={"name": "qa2", "nope": 1}, headers={"X-Request-ID": "chg-refused"})
    assert refused.status_code == 422 and row_of(api, "chg-refused")["changes"] == []


def test_secrets_show_as_changed_and_never_reach_the_trail(api: httpx.Client, live_server) -> None:
    _, db = live_server
    api.post("/environments", json={"name": "dev"})
    hv = call(api, "POST", "/hypervisors", "chg-hv-create",
              json={"name": "ec2", "environment": "dev", "driver": "aws",
                    "config": {"region": "eu-west-1", "access_key_id": "AKIA1", "secret_access_key": SECRET_ONE}}).json()
    created = row_of(api, "chg-hv-create")["changes"][0]["fields"]
    assert created["secret_config"] == "changed" and created["config"] == {
        "new": {"region": "eu-west-1", "access_key_id": "AKIA1"}}
    call(api, "PATCH", f"/hypervisors/{hv['id']}", "chg-hv-patch",
         json={"config": {"secret_access_key": SECRET_TWO, "region": "us-east-1"}})
    (change,) = row_of(api, "chg-hv-patch")["changes"]
    assert change["fields"]["secret_config"] == "changed"
    assert change["fields"]["config"]["old"]["region"] == "eu-west-1"
    assert change["fields"]["config"]["new"]["region"] == "us-east-1"
    # A password change: the hash is "changed", never shown.
    user = call(api, "POST", "/users", "chg-user", json={"name": "pat", "password": TEST_PASSWORDS[2]}).json()
    call(api, "PATCH", f"/users/{user['id']}", "chg-user-pw", json={"password": TEST_PASSWORDS[3]})
    fields = row_of(api, "chg-user-pw")["changes"][0]["fields"]
    assert fields["password_hash"] == "changed"
    with db.engine.connect() as conn:
        trail = json.dumps([list(r) for r in conn.execute(select(AuditChange.__table__))], default=str)
        trail += json.dumps([list(r) for r in conn.execute(select(AuditEvent.__table__))], default=str)
    for secret in (SECRET_ONE, SECRET_TWO, TEST_PASSWORDS[2], TEST_PASSWORDS[3], "gAAAAA", "$argon2"):
        assert secret not in trail


def test_resource_history_newest_first_paged(api: httpx.Client) -> None:
    # SQLite gives a deleted row's id again: earlier tests' systems had these ids too, so look from now on.
    started = datetime.now(timezone.utc).isoformat()
    api.post("/environments", json={"name": "dev"})
    system = call(api, "POST", "/systems", "hist-1", json={"hostname": "h1", "environment": "dev"}).json()
    sid = system["id"]
    call(api, "PATCH", f"/systems/{sid}", "hist-2", json={"machine": {"cpu": 4}})
    call(api, "PATCH", "/systems/h1", "hist-3", json={"labels": {"tier": "gold"}})  # by name: found by its changes
    refused = api.patch(f"/systems/{sid}", json={"machine": {"cpu": 0}}, headers={"X-Request-ID": "hist-4"})
    assert refused.status_code == 422
    api.get(f"/systems/{sid}")  # a read is not history
    other = api.post("/systems", json={"hostname": "h2", "environment": "dev"}).json()
    api.patch(f"/systems/{other['id']}", json={"machine": {"cpu": 8}})
    page = api.get("/audit", params={"resource": f"system:{sid}", "limit": 2, "since": started}).json()
    assert [r["request_id"] for r in page["items"]] == ["hist-4", "hist-3"]
    rest = httpx.get(page["next"], headers=api.headers).json()
    assert [r["request_id"] for r in rest["items"]] == ["hist-2", "hist-1"] and rest["next"] is None
    assert rest["items"][0]["changes"][0]["fields"] == {"cpu": {"old": None, "new": 4}}
    assert rest["items"][1]["changes"][0]["op"] == "create" and rest["items"][1]["username"] == "admin"
    assert page["items"][0]["changes"] == [] and page["items"][0]["outcome"] == "refused"
    # Plural kinds and table names are the same resource; unknown kinds and bad shapes are 422s.
    assert len(api.get("/audit", params={"resource": f"systems:{sid}", "since": started}).json()["items"]) == 4
    assert api.get("/audit", params={"resource": "spaceship:1"}).status_code == 422
    assert api.get("/audit", params={"resource": "system"}).status_code == 422


def test_long_values_and_many_resources_are_bounded_and_marked(api: httpx.Client) -> None:
    api.post("/environments", json={"name": "dev"})
    big = {f"k{i}": "x" * 100 for i in range(40)}
    call(api, "POST", "/systems", "chg-big", json={"hostname": "big1", "environment": "dev", "variables": big})
    variables = row_of(api, "chg-big")["changes"][0]["fields"]["variables"]["new"]
    assert variables["truncated"] is True and variables["chars"] > MAX_VALUE_CHARS
    assert len(variables["preview"]) == audit_changes.PREVIEW_CHARS
    # A bulk import keeps the first MAX_RESOURCES resources and counts the rest.
    items = [{"hostname": f"bulk{n}", "environment": "dev", "labels": {"n": str(n)}} for n in range(MAX_RESOURCES + 20)]
    call(api, "POST", "/systems/import", "chg-bulk", json={"items": items})
    row = row_of(api, "chg-bulk")
    assert len(row["changes"]) == MAX_RESOURCES and row["detail"]["changes_omitted"] == 20
    assert all(c["op"] == "create" and "system_labels.n" in c["fields"] for c in row["changes"])


# ---------------------------------------------------------------- prune


def _old_rows(db: Database, count: int, at: datetime) -> None:
    for n in range(count):
        audit.record(db, [Change("systems", "999999", "update", {"cpu": {"old": n, "new": n + 1}})],
                     at=at + timedelta(minutes=n), method="PATCH", path="/api/v1/systems/999999", status=200,
                     username="ghost", request_id=f"old-{n}")


def test_prune_deletes_old_rows_and_is_itself_audited(api: httpx.Client, live_server) -> None:
    _, db = live_server
    long_ago = datetime(2001, 2, 3, tzinfo=timezone.utc)
    _old_rows(db, 3, long_ago)
    body = {"before": "2001-12-31T00:00:00Z"}
    dry = call(api, "POST", "/audit/prune", "prune-dry", json={**body, "dry_run": True}).json()
    assert dry["events"] == 3 and dry["changes"] == 3 and dry["dry_run"] is True
    done = call(api, "POST", "/audit/prune", "prune-1", json=body).json()
    assert (done["events"], done["changes"]) == (3, 3)
    assert datetime.fromisoformat(done["oldest"]) == long_ago
    assert datetime.fromisoformat(done["newest"]) == long_ago + timedelta(minutes=2)
    with db.engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.at < long_ago.replace(year=2002))) == 0
        assert conn.scalar(select(func.count()).select_from(AuditChange).where(AuditChange.resource_id == "999999")) == 0
        assert conn.scalar(select(func.count()).select_from(AuditPrunePermit)) == 0  # none outlives a prune
    # Outside a prune, the changes are as append-only as the rows they belong to.
    for statement in ("UPDATE audit_changes SET op = 'create'", "DELETE FROM audit_changes",
                      "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(statement))
    row = row_of(api, "prune-1")
    assert row["username"] == "admin" and row["action"] == "audit.prune"
    assert row["detail"]["events"] == 3 and row["detail"]["before"].startswith("2001-12-31")
    assert row["detail"]["oldest"].startswith("2001-02-03")
    assert row_of(api, "prune-dry")["action"] == "audit.dry_run_prune"


def test_prune_refuses_the_future_and_recent_dates_unless_forced(api: httpx.Client) -> None:
    now = datetime.now(timezone.utc)
    future = api.post("/audit/prune", json={"before": (now + timedelta(days=1)).isoformat(), "force": True})
    assert future.status_code == 422 and future.json()["errors"][0]["field"] == "before"
    recent = {"before": (now - timedelta(days=2)).isoformat(), "dry_run": True}
    refused = api.post("/audit/prune", json=recent)
    assert refused.status_code == 422 and "force" in refused.json()["detail"]
    assert api.post("/audit/prune", json={**recent, "force": True}).status_code == 200
    naive = api.post("/audit/prune", json={"before": "2001-01-01T00:00:00"})
    assert naive.status_code == 422  # a time without a zone is ambiguous


def test_a_viewer_can_neither_prune_nor_read_the_trail(api: httpx.Client, live_server) -> None:
    base, db = live_server
    api.post("/environments", json={"name": "dev"})
    ensure_user(db, "vera")
    api.put("/users/vera/roles/dev", json={"role": "viewer"})
    with httpx.Client(base_url=base + "/api/v1", headers=bearer(token_for(db, "vera"))) as vera:
        refused = vera.post("/audit/prune", json={"before": "2001-01-01T00:00:00Z"},
                            headers={"X-Request-ID": "prune-viewer"})
        assert refused.status_code == 403
        assert vera.get("/audit", params={"resource": "environment:1"}).status_code == 403
    row = row_of(api, "prune-viewer")
    assert row["username"] == "vera" and row["outcome"] == "refused"


def test_cli_prune_and_history(api: httpx.Client, live_server, admin_token: str, tmp_path: Path) -> None:
    base, db = live_server
    _old_rows(db, 2, datetime(2002, 5, 6, tzinfo=timezone.utc))
    cli = Cli(base, tmp_path)
    env = {"ARMILLARY_TOKEN": admin_token}
    dry = cli("audit", "prune", "--before", "2002-12-31", "--dry-run", "-o", "json", env=env)
    assert dry.code == 0, str(dry)
    assert json.loads(dry.out)["events"] == 2
    done = cli("audit", "prune", "--before", "2002-12-31", env=env)
    assert done.code == 0 and "Deleted 2 audit rows" in done.out, str(done)
    recent = cli("audit", "prune", "--before", datetime.now(timezone.utc).date().isoformat(), env=env)
    assert recent.code != 0 and "force" in recent.err
    made = api.post("/environments", json={"name": "clienv"}).json()
    history = cli("audit", "--resource", f"environment:{made['id']}", "-o", "json", env=env)
    assert history.code == 0, str(history)
    item = json.loads(history.out)["items"][0]  # newest first (SQLite may have given the id before)
    assert item["changes"][0]["op"] == "create" and item["changes"][0]["fields"]["name"] == {"new": "clienv"}
    table = cli("audit", "--resource", f"environment:{made['id']}", env=env)
    assert f"environments:{made['id']} create" in table.out


# ---------------------------------------------------------------- the listener's transaction rules


@pytest.fixture(scope="module")
def local_db(tmp_path_factory) -> Database:
    url = f"sqlite:///{tmp_path_factory.mktemp('audit-changes') / 'a.db'}"
    db = Database(url)
    upgrade(db)
    yield db
    db.dispose()


def test_only_committed_changes_count(local_db: Database) -> None:
    with audit_changes.collecting() as collector:
        with local_db.session() as session:
            session.add(Environment(name="kept", variables={}))
            session.flush()
            with session.begin_nested():  # a released savepoint: kept, counted at the outer commit
                session.add(Environment(name="released", variables={}))
            with pytest.raises(RuntimeError):
                with session.begin_nested():
                    session.add(Environment(name="undone", variables={}))
                    session.flush()
                    raise RuntimeError("savepoint rolled back")
        with pytest.raises(RuntimeError):
            with local_db.session() as session:
                session.add(Environment(name="rolled-back", variables={}))
                session.flush()
                raise RuntimeError("whole transaction rolled back")
        changes = collector.close()
    assert [(c.resource_type, c.op, c.fields["name"]) for c in changes] == [
        ("environments", "create", {"new": "kept"}), ("environments", "create", {"new": "released"})]


def test_changes_after_the_row_is_written_or_outside_a_request_are_ignored(local_db: Database) -> None:
    with local_db.session() as session:  # no request: nothing collected, nothing pending
        session.add(Environment(name="outside", variables={}))
    with audit_changes.collecting() as collector:
        assert collector.close() == []
        with local_db.session() as session:
            session.add(Environment(name="late", variables={}))
        assert collector.close() == []


def test_a_part_deleted_and_inserted_again_is_one_update_of_its_parent(local_db: Database) -> None:
    with local_db.session() as session:
        env = Environment(name="parts", variables={})
        session.add(env)
        session.flush()
        system = System(hostname="p1", environment_id=env.id, labels=[SystemLabel(key="a", value="1")])
        session.add(system)
    with audit_changes.collecting() as collector:
        with local_db.session() as session:
            found = session.get(System, system.id)
            found.labels = [SystemLabel(key="a", value="1"), SystemLabel(key="b", value="2")]
        with local_db.session() as session:
            session.delete(session.get(System, system.id))
        (change,) = collector.close()
    # The update, then the delete: one delete with the values from before the request.
    assert change.op == "delete" and change.resource_id == str(system.id)
    assert change.fields["hostname"] == {"old": "p1"}
    assert change.fields["system_labels.a"] == {"old": "1"}


def test_a_failure_to_read_the_changes_never_fails_the_write(local_db: Database, monkeypatch) -> None:
    def broken(*_args):
        raise RuntimeError("history unreadable")

    monkeypatch.setattr(audit_changes, "_read_flush", broken)
    with audit_changes.collecting() as collector:
        with local_db.session() as session:
            session.add(Environment(name="written-anyway", variables={}))
        assert collector.failed and collector.close() == []
    with local_db.session() as session:
        assert session.scalar(select(Environment.id).where(Environment.name == "written-anyway")) is not None

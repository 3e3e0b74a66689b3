"""The audit trail: a row (and a JSON log line) for every API request, whatever its outcome."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from armillary.domain.db import Database
from tests.support.accounts import ADMIN, TEST_PASSWORDS, bearer, ensure_user, token_for
from tests.support.server import running_app


def trail(api: httpx.Client, **params) -> list[dict]:
    return api.get("/audit", params={"limit": 1000, **params}).json()["items"]


def test_successful_request_is_recorded_with_who_what_where(api: httpx.Client) -> None:
    made = api.post("/environments", json={"name": "dev"}, headers={"X-Request-ID": "audit-create-1"})
    rows = trail(api, request_id="audit-create-1")
    assert len(rows) == 1
    row = rows[0]
    assert row["username"] == ADMIN and row["user_id"] is not None
    assert row["method"] == "POST" and row["path"] == "/api/v1/environments"
    assert row["status"] == 201 and row["outcome"] == "success"
    assert row["resource_type"] == "environments" and row["resource_id"] == str(made.json()["id"])
    assert row["source_address"] == "127.0.0.1" and row["action"] == "create_environment"
    assert datetime.fromisoformat(row["at"]) > datetime.now(timezone.utc) - timedelta(minutes=1)


def test_refused_requests_are_recorded(api: httpx.Client, live_server) -> None:
    base = str(api.base_url).rstrip("/")
    httpx.get(f"{base}/systems", headers={"X-Request-ID": "audit-anon"})
    httpx.post(f"{base}/auth/login", json={"username": "Mallory", "password": "guessed-password-1"},
               headers={"X-Request-ID": "audit-login"})
    api.get("/systems/404404", headers={"X-Request-ID": "audit-missing"})
    db = live_server[1]
    ensure_user(db, "vic")
    with httpx.Client(base_url=base, headers=bearer(token_for(db, "vic"))) as vic:
        vic.post("/types", json={"name": "x"}, headers={"X-Request-ID": "audit-forbidden"})
    anonymous, = trail(api, request_id="audit-anon")
    assert anonymous["status"] == 401 and anonymous["outcome"] == "refused" and anonymous["username"] is None
    login, = trail(api, request_id="audit-login")
    assert login["status"] == 401 and login["username"] == "mallory" and login["action"] == "login"
    assert "guessed-password-1" not in str(login)
    missing, = trail(api, request_id="audit-missing")
    assert missing["status"] == 404 and missing["resource_type"] == "systems" and missing["resource_id"] == "404404"
    forbidden, = trail(api, request_id="audit-forbidden")
    assert forbidden["status"] == 403 and forbidden["username"] == "vic" and forbidden["outcome"] == "refused"


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory) -> Iterator[tuple[str, Database]]:
    """The real app with one extra route that raises, to record a request that failed (500)."""

    def add_failing_route(app) -> None:
        @app.get("/api/v1/_test/boom", include_in_schema=False)
        def boom() -> None:
            raise RuntimeError("boom")

    data_dir: Path = tmp_path_factory.mktemp("audit-failing")
    with running_app(f"sqlite:///{data_dir / 'armillary.db'}", data_dir, add_failing_route, engine="off") as found:
        yield found


def test_failed_request_is_recorded(failing_server) -> None:
    base, db = failing_server
    assert httpx.get(f"{base}/api/v1/_test/boom", headers={"X-Request-ID": "audit-boom"}).status_code == 500
    ensure_user(db, ADMIN, admin=True)
    rows = httpx.get(f"{base}/api/v1/audit", params={"request_id": "audit-boom"},
                     headers=bearer(token_for(db, ADMIN))).json()["items"]
    assert [(r["status"], r["outcome"], r["path"]) for r in rows] == [(500, "failed", "/api/v1/_test/boom")]


def test_filters_by_user_resource_and_time(api: httpx.Client) -> None:
    start = datetime.now(timezone.utc)
    api.post("/environments", json={"name": "qa"})
    api.get("/environments/qa")
    api.patch("/environments/qa", json={"description": "d"})
    rows = trail(api, resource_type="environments", resource_id="qa", since=start.isoformat())
    assert [r["method"] for r in rows] == ["PATCH", "GET"]  # newest first
    assert trail(api, user="nobody-at-all") == []
    assert trail(api, until=start.isoformat(), request_id=rows[0]["request_id"]) == []
    first = api.get("/audit", params={"limit": 1, "since": start.isoformat()}).json()
    second = api.get(first["next"]).json()
    assert second["items"][0]["id"] < first["items"][0]["id"]


def test_each_request_is_also_a_json_log_line(api: httpx.Client, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="armillary.audit"):
        api.get("/environments", headers={"X-Request-ID": "audit-log-line"})
    records = [r for r in caplog.records if r.name == "armillary.audit" and r.audit["request_id"] == "audit-log-line"]
    assert len(records) == 1 and records[0].audit["username"] == ADMIN and records[0].audit["status"] == 200


def test_the_trail_is_append_only(api: httpx.Client, live_server) -> None:
    api.get("/environments")
    db: Database = live_server[1]
    for statement in ("UPDATE audit_events SET status = 200", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), db.engine.begin() as conn:
            conn.execute(text(statement))


def test_secrets_sent_to_the_api_never_reach_the_trail(api: httpx.Client) -> None:
    password = TEST_PASSWORDS[3]
    api.post("/users", json={"name": "carl", "password": password}, headers={"X-Request-ID": "audit-secret"})
    api.get("/systems", params={"q": password}, headers={"X-Request-ID": "audit-secret-query"})
    for request_id in ("audit-secret", "audit-secret-query"):
        row, = trail(api, request_id=request_id)
        assert password not in str(row)

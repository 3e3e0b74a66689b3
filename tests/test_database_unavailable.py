"""A database that cannot serve now (out of connections, restarting, locked by a writer) is answered 503 with
Retry-After, not 500: a client may try again, and the server serves again once the database is back."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from armillary.config import Settings
from armillary.failures import database_unavailable
from tests.support.accounts import ADMIN, bearer, ensure_user, token_for
from tests.support.databases import PG_ADMIN_URL, postgres_database
from tests.support.server import running_app


def raised(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the error is what the test looks at
        return exc
    raise AssertionError("no error was raised")


def test_a_locked_sqlite_database_is_unavailable_a_missing_table_is_not(tmp_path) -> None:
    path = tmp_path / "locked.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with engine.connect() as conn:
            locked = raised(lambda: conn.execute(text("INSERT INTO t VALUES (1)")))
            assert isinstance(locked, OperationalError) and database_unavailable(locked)
        with engine.connect() as conn:
            missing = raised(lambda: conn.execute(text("SELECT * FROM nowhere")))
            assert isinstance(missing, OperationalError) and not database_unavailable(missing)
    finally:
        writer.rollback()
        writer.close()
        engine.dispose()


def test_a_server_whose_database_refuses_connections_answers_503_then_serves_again(tmp_path) -> None:
    with postgres_database() as url, running_app(url, tmp_path) as (base_url, db):
        name = make_url(url).database
        ensure_user(db, ADMIN, admin=True)
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with httpx.Client(base_url=base_url + "/api/v1", headers=bearer(token_for(db, ADMIN)), timeout=30) as api:
            assert api.get("/environments").status_code == 200
            declared = api.get("/openapi.json").json()["paths"]["/api/v1/environments"]
            for operation in (declared["get"], declared["post"]):  # the 503 is part of the contract
                assert "Retry-After" in operation["responses"]["503"]["headers"]
                assert "application/problem+json" in operation["responses"]["503"]["content"]
            try:
                with admin.connect() as conn:  # as a restart or a full server: no new connection, old ones cut
                    conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                    conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                                 {"n": name})
                for response in (api.get("/environments"),
                                 api.post("/environments", json={"name": "refused", "description": "x"})):
                    assert response.status_code == 503, response.text
                    assert response.headers["retry-after"] == "1"
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.json()["type"] == "urn:armillary:problem:database-unavailable"
                    assert response.headers["x-request-id"] == response.json()["request_id"]
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
                admin.dispose()
            deadline = time.monotonic() + 10
            while (response := api.get("/environments")).status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert response.status_code == 200
            assert "refused" not in {env["name"] for env in response.json()["items"]}


def test_a_processs_postgresql_pool_is_sized_by_its_settings(tmp_path) -> None:
    """ARMILLARY_DB_POOL_SIZE + ARMILLARY_DB_MAX_OVERFLOW connections at most: the next one waits for a
    connection to come back (so several processes can be fitted under the server's max_connections)."""
    with pytest.raises(ValueError, match="ARMILLARY_DB_POOL_SIZE: '0' is not a whole number of at least 1"):
        Settings.from_env({"ARMILLARY_DATA_DIR": str(tmp_path), "ARMILLARY_DB_POOL_SIZE": "0"})
    with postgres_database() as url:
        settings = Settings.from_env({"ARMILLARY_DATA_DIR": str(tmp_path), "ARMILLARY_DATABASE_URL": url,
                                      "ARMILLARY_DB_POOL_SIZE": "1", "ARMILLARY_DB_MAX_OVERFLOW": "1"})
        db = settings.database()
        try:
            held = [db.engine.connect(), db.engine.connect()]
            third: list = []
            waiting = threading.Thread(target=lambda: third.append(db.engine.connect()), daemon=True)
            waiting.start()
            waiting.join(0.5)
            assert waiting.is_alive() and third == []  # no third connection while two are out
            held.pop().close()
            waiting.join(5)
            assert len(third) == 1
            for conn in held + third:
                conn.close()
        finally:
            db.dispose()


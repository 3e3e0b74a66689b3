"""Fixtures: every API test runs against the real app over HTTP, once on SQLite and once on PostgreSQL."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack

import httpx
import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.exc import OperationalError

from armillary.domain import migrate
from armillary.domain.accounts import AuditChange, AuditEvent, User
from armillary.domain.db import Database
from armillary.domain.jobs import Job, JobEvent, Step
from armillary.domain.models import Base
from armillary.logs import JsonFormatter, install_redaction
from armillary.notify import destinations
from tests.support.accounts import ADMIN, TEST_SECRETS, bearer, ensure_user, token_for
from tests.support.databases import database
from tests.support.server import changed_settings, running_app

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", autouse=True)
def secrets_never_logged(tmp_path_factory) -> Iterator[None]:
    """Every log record of the test run, written as production writes it (JSON lines through the
    redaction filter), must be free of the secrets the tests use; checked when the run ends."""
    log_file = tmp_path_factory.mktemp("logs") / "test-run.log"
    handler = install_redaction(logging.FileHandler(log_file, encoding="utf-8"))
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.INFO)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO) if level else logging.INFO)
    yield
    root.removeHandler(handler)
    root.setLevel(level)
    handler.close()
    leaked = [(n, secret) for n, line in enumerate(log_file.read_text(encoding="utf-8").splitlines(), 1)
              for secret in TEST_SECRETS if secret in line]
    assert leaked == [], f"secrets in the test run's log {log_file} (line, secret): {leaked[:10]}"


def assert_no_secrets_stored(db, audit_after: int) -> None:
    """No secret the tests use in any job event, job, step, or audit row written since ``audit_after``."""
    with db.session() as session:
        texts = [json.dumps([e.message, e.data], default=str) for e in session.scalars(select(JobEvent))]
        texts += [json.dumps([j.error, j.params, j.context, j.summary], default=str) for j in session.scalars(select(Job))]
        texts += [json.dumps([s.error, s.result], default=str) for s in session.scalars(select(Step))]
        rows = session.scalars(select(AuditEvent).where(AuditEvent.id > audit_after))
        texts += [json.dumps([r.path, r.detail], default=str) for r in rows]
        changes = session.scalars(select(AuditChange).where(AuditChange.event_id > audit_after))
        texts += [json.dumps(c.fields, default=str) for c in changes]
    leaked = {secret for text in texts for secret in TEST_SECRETS if secret in text}
    assert not leaked, f"secrets stored in job output or the audit trail: {sorted(leaked)}"


@pytest.fixture(scope="session", autouse=True)
def webhooks_may_reach_loopback() -> Iterator[None]:
    """The tests' webhook receivers listen on loopback, which a server refuses unless its operator allows
    it (``armillary.notify.destinations``): allowed here, for in-process servers and the ones started as
    subprocesses (they inherit the environment)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(destinations.ENV, "127.0.0.0/8,::1/128")
        yield


@pytest.fixture(scope="module", params=BACKENDS)
def db(request, tmp_path_factory) -> Iterator[Database]:
    """A migrated database of its own for the module's tests (no server): SQLite, then PostgreSQL."""
    with database(request.param, tmp_path_factory.mktemp(request.param)) as url:
        handle = Database(url)
        migrate.upgrade(handle)
        yield handle
        handle.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


# Kept across tests: the admin account the `api` client uses, and the trail (append-only by design).
KEPT_TABLES = {"users", "api_tokens", "audit_events", "audit_changes"}


@pytest.fixture(scope="session")
def live_server(backend: str, tmp_path_factory) -> Iterator[tuple[str, object]]:
    data_dir = tmp_path_factory.mktemp(f"server-{backend}")
    with database(backend, data_dir) as url, running_app(url, data_dir) as (base_url, db):
        ensure_user(db, ADMIN, admin=True)
        yield base_url, db


@pytest.fixture(scope="session")
def admin_token(live_server) -> str:
    """A token of the `admin` account of the session's server."""
    return token_for(live_server[1], ADMIN)


def empty_database(db) -> None:
    """Delete every row but the admin account, its tokens and the audit trail.

    A job a previous test left running may still write its steps: PostgreSQL may then pick this
    transaction as a deadlock victim, so it is tried again."""
    for attempt in range(5):
        try:
            with db.engine.begin() as conn:
                for table in reversed(Base.metadata.sorted_tables):
                    if table.name not in KEPT_TABLES:
                        conn.execute(delete(table))
                conn.execute(delete(User.__table__).where(User.__table__.c.name != ADMIN))
            return
        except OperationalError:
            if attempt == 4:
                raise
            time.sleep(0.2)


@pytest.fixture
def api(live_server, admin_token) -> Iterator[httpx.Client]:
    """An HTTP client, signed in as an admin, on a freshly emptied database."""
    base_url, db = live_server
    empty_database(db)
    with db.session() as session:
        audit_before = session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))
    with httpx.Client(base_url=base_url + "/api/v1", timeout=30, headers=bearer(admin_token)) as client:
        yield client
    assert_no_secrets_stored(db, audit_before)


@pytest.fixture
def server_settings(live_server) -> Iterator[Callable[..., object]]:
    """``server_settings(scripts_dir=path, ...)``: the session server's settings (``config.Settings``)
    changed for this test only, as an operator would configure the server (e.g. ARMILLARY_SCRIPTS_DIR)."""
    with ExitStack() as stack:
        yield lambda **changes: stack.enter_context(changed_settings(live_server[0], **changes))


@pytest.fixture
def base_url(live_server) -> str:
    return live_server[0]


@pytest.fixture
def admin_headers(admin_token) -> dict[str, str]:
    """For tests that make their own requests: the admin's Authorization header."""
    return bearer(admin_token)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed web-console test prints what its open pages show and what they saw go wrong."""
    outcome = yield
    report = outcome.get_result()
    chromium = getattr(item, "funcargs", {}).get("chromium")
    if report.when == "call" and report.failed and chromium is not None:
        from tests.support import browser

        report.sections.append(("browser pages at the failure", browser.describe(chromium)))

"""Fixtures: every API test runs against the real app over HTTP, once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import delete

from armillary.domain.models import Base
from tests.support.databases import database
from tests.support.server import running_app

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def live_server(backend: str, tmp_path_factory) -> Iterator[tuple[str, object]]:
    data_dir = tmp_path_factory.mktemp(f"server-{backend}")
    with database(backend, data_dir) as url, running_app(url, data_dir) as (base_url, db):
        yield base_url, db


@pytest.fixture
def api(live_server) -> Iterator[httpx.Client]:
    """An HTTP client on a freshly emptied database."""
    base_url, db = live_server
    with db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
    with httpx.Client(base_url=base_url + "/api/v1", timeout=30) as client:
        yield client


@pytest.fixture
def base_url(live_server) -> str:
    return live_server[0]

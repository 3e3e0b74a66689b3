"""Throw-away databases for tests: an SQLite file, or a fresh PostgreSQL database per run."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.peers import missing_peer

PG_ADMIN_URL = os.environ.get("ARMILLARY_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a uniquely named database, yield its URL, drop it afterwards."""
    name = f"armillary_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any failure here means the peer is not there
        missing_peer(f"PostgreSQL at {make_url(PG_ADMIN_URL).render_as_string()} ({type(exc).__name__}: {exc})")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def database(backend: str, tmp_dir: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_dir / 'armillary.db'}"
    else:
        with postgres_database() as url:
            yield url

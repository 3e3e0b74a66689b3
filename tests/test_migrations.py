"""The Alembic migrations build exactly the schema the ORM models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

import armillary.domain
from armillary.domain import migrate
from armillary.domain.db import Database
from armillary.domain.models import Base
from tests.support.databases import database

# "The models" are every table declared anywhere in the domain package, not only domain/models.py.
for _module in pkgutil.iter_modules(armillary.domain.__path__, "armillary.domain."):
    importlib.import_module(_module.name)



@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path) -> Iterator[Database]:
    """A brand-new, empty database of each backend (a missing PostgreSQL fails under CI=true)."""
    with database(request.param, tmp_path) as url:
        db = Database(url)
        try:
            yield db
        finally:
            db.dispose()


def schema_diff(db: Database, *, server_defaults: bool = False) -> list:
    """What autogenerate would change to make the database match the models: empty when they agree.

    Tables, columns, types, nullability, indexes, unique and foreign keys are compared (alembic's
    defaults); ``server_defaults`` adds the columns' server-side defaults.
    """
    with db.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": server_defaults}
        )
        return compare_metadata(context, Base.metadata)


def downgrade(db: Database, revision: str = "base") -> None:
    config = migrate.alembic_config(db.url)
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names())


def test_upgrade_from_empty_matches_the_models(empty_db: Database) -> None:
    assert tables(empty_db) == set()
    assert not migrate.is_current(empty_db)
    migrate.upgrade(empty_db)
    assert migrate.is_current(empty_db)
    assert migrate.current_revision(empty_db.engine) == migrate.head_revision()
    assert tables(empty_db) == set(Base.metadata.tables) | {"alembic_version"}
    assert schema_diff(empty_db) == []


def test_upgrade_is_a_no_op_when_current(empty_db: Database) -> None:
    migrate.upgrade(empty_db)
    migrate.upgrade(empty_db)
    assert migrate.is_current(empty_db)
    assert schema_diff(empty_db) == []


def test_downgrade_to_base_and_upgrade_again(empty_db: Database) -> None:
    migrate.upgrade(empty_db)
    downgrade(empty_db)
    assert tables(empty_db) <= {"alembic_version"}
    assert migrate.current_revision(empty_db.engine) is None
    assert not migrate.is_current(empty_db)
    migrate.upgrade(empty_db)
    assert migrate.is_current(empty_db)
    assert tables(empty_db) == set(Base.metadata.tables) | {"alembic_version"}
    assert schema_diff(empty_db) == []


def test_server_defaults_match_the_models(empty_db: Database) -> None:
    migrate.upgrade(empty_db)
    assert schema_diff(empty_db, server_defaults=True) == []


def test_the_diff_check_can_see_a_difference(empty_db: Database) -> None:
    """Guard for the tests above: an incomplete schema must show up as a difference."""
    migrate.upgrade(empty_db)
    with empty_db.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_systems_hostname")
    diff = schema_diff(empty_db)
    assert any(d[0] == "add_index" and d[1].name == "ix_systems_hostname" for d in diff), diff

"""Alembic environment: runs migrations on the connection or URL that ``armillary.domain.migrate`` hands in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from armillary.domain import jobs  # noqa: F401  (registers the job tables on Base.metadata)
from armillary.network import models as network_models  # noqa: F401  (and the network tables)
from armillary.audits import models as audit_models  # noqa: F401  (and the audit tables)
from armillary.clusters import models as cluster_models  # noqa: F401  (and the cluster tables)
from armillary.stacks import models as stack_models  # noqa: F401  (and the stack tables)
from armillary.notify import models as notify_models  # noqa: F401  (and the notification tables)
from armillary.chat import models as chat_models  # noqa: F401  (and the chat tables)
from armillary.domain.db import is_sqlite, normalize_url
from armillary.domain.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    url = normalize_url(config.get_main_option("sqlalchemy.url"))
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True, render_as_batch=is_sqlite(url))
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = normalize_url(config.get_main_option("sqlalchemy.url"))
    engine = engine_from_config({"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

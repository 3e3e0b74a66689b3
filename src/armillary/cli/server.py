"""Server-side commands: ``serve`` and ``migrate`` work on the database directly.

The database modules (SQLAlchemy, Alembic) are imported inside the commands, so the client
commands registered beside these do not pay for them at start-up.
"""

from __future__ import annotations

import logging

import typer

from armillary import logs
from armillary.config import Settings


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(8000, help="Port to listen on (0 picks a free one)"),
    demo: bool = typer.Option(False, "--demo", help="Add a small demo inventory on a simulated hypervisor"),
    migrate: bool = typer.Option(True, "--migrate/--no-migrate", help="Upgrade the database schema on start"),
    log_format: str = typer.Option("text", "--log-format", help="text or json"),
) -> None:
    """Run the API server (embedded SQLite unless ARMILLARY_DATABASE_URL says otherwise)."""
    import socket

    import uvicorn

    from armillary.api.app import create_app
    from armillary.domain import migrate as migrations
    from armillary.domain.db import Database

    logs.configure(json_lines=log_format == "json")
    settings = Settings.from_env()
    settings = Settings(**{**settings.__dict__, "auto_migrate": False})  # migrated here, once
    db = Database(settings.database_url)
    if migrate:
        migrations.upgrade(db)
    if demo:
        from armillary.domain.demo import seed_demo

        with db.session() as session:
            seed_demo(session)
    first_admin = _first_admin(db) if demo else None
    if not demo and not _has_users(db):
        typer.echo("No user accounts yet: create the first admin with "
                   "`armillary admin create-user NAME --admin` (it works with the server running).", err=True)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    url_host = f"[{host}]" if ":" in host else host
    typer.echo(f"Armillary listening on http://{url_host}:{bound_port}  (API docs: /docs, database: {_safe(db.url)})")
    if first_admin:
        typer.echo(f"Created the demo admin account 'admin' with password {first_admin} (shown only now): "
                   f"`armillary login --username admin`")
    config = uvicorn.Config(create_app(settings, db), log_config=None, access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def _has_users(db) -> bool:
    from sqlalchemy import exists, select

    from armillary.domain.accounts import User

    with db.session() as session:
        return bool(session.scalar(select(exists().where(User.id.isnot(None)))))


def _first_admin(db) -> str | None:
    """For the demo: an admin named ``admin`` with a random password when there is no account at all."""
    import secrets

    from armillary.api.users import create_user
    from armillary.domain.account_schemas import UserCreate

    if _has_users(db):
        return None
    password = secrets.token_urlsafe(12)
    with db.session() as session:
        create_user(session, UserCreate(name="admin", password=password, admin=True))
    return password


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def migrate(
    revision: str = typer.Argument("head", help="Target revision"),
    check: bool = typer.Option(False, "--check", help="Only report whether the schema is current"),
) -> None:
    """Upgrade the database schema (or check it)."""
    from armillary.domain import migrate as migrations
    from armillary.domain.db import Database

    logging.basicConfig(level=logging.WARNING)
    db = Database(Settings.from_env().database_url)
    if check:
        current, head = migrations.current_revision(db.engine), migrations.head_revision()
        typer.echo(f"schema at {current}, head is {head}")
        raise typer.Exit(0 if current == head else 1)
    migrations.upgrade(db, revision)
    typer.echo(f"schema at {migrations.current_revision(db.engine)}")


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command()(migrate)

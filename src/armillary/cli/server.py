"""Server-side commands: ``serve`` and ``migrate`` work on the database directly.

The database modules (SQLAlchemy, Alembic) are imported inside the commands, so the client
commands registered beside these do not pay for them at start-up.

``serve`` in production (docs/production.md):

* ``--workers N`` runs N server processes on one socket (uvicorn's supervisor), each with its own
  engine: step leases make several engines on one database safe. PostgreSQL only — processes
  cannot share an SQLite file safely — so SQLite with N > 1 is refused. The schema is migrated and
  the demo seeded once, by the supervisor, before the processes start.
* SIGTERM/SIGINT: each process stops claiming steps at once, lets running ones finish for
  ARMILLARY_SHUTDOWN_TIMEOUT seconds while HTTP connections close, then hands back the leases of
  the steps still running (``Engine.stop``).
* SIGHUP re-reads the settings — the environment, then ``--env-file`` over it (a process's own
  environment never changes, so the file is what an operator edits) — and applies the logging and
  LDAP ones in place; everything else needs a restart. With ``--workers``, the supervisor passes
  SIGHUP on to every process instead of restarting them (which would drain their steps).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from armillary import logs
from armillary.config import Settings

log = logging.getLogger("armillary.server")


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on"),
    port: int = typer.Option(8000, help="Port to listen on (0 picks a free one)"),
    demo: bool = typer.Option(False, "--demo", help="Add a small demo inventory on a simulated hypervisor"),
    migrate: bool = typer.Option(True, "--migrate/--no-migrate", help="Upgrade the database schema on start"),
    log_format: str | None = typer.Option(
        None, "--log-format", help="text or json (default: ARMILLARY_LOG_FORMAT, else text)", show_default=False),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Server processes, each with its own engine (more than 1: PostgreSQL only)"),
    env_file: str | None = typer.Option(
        None, "--env-file", envvar="ARMILLARY_ENV_FILE", show_default=False,
        help="KEY=VALUE settings read over the environment, at start and again on SIGHUP"),
) -> None:
    """Run the API server (embedded SQLite unless ARMILLARY_DATABASE_URL says otherwise)."""
    import socket

    import uvicorn

    from armillary.domain import migrate as migrations

    # Passed on through the environment: the --workers processes are fresh interpreters that read it.
    if log_format:
        os.environ["ARMILLARY_LOG_FORMAT"] = log_format
    if env_file:
        os.environ["ARMILLARY_ENV_FILE"] = str(Path(env_file).absolute())
    try:
        settings = replace(_settings(), auto_migrate=False)  # migrated here, once
        settings.check_engine()  # e.g. celery on SQLite: refused, naming PostgreSQL
        _configure_logging(settings)
    except (OSError, ValueError) as exc:
        typer.echo(f"armillary serve: {exc}", err=True)
        raise typer.Exit(2) from None
    metrics_dir = None
    if workers > 1:
        _refuse_sqlite(settings, workers)
        metrics_dir = _share_metrics_dir(settings)
    db = settings.database()
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
    # Open HTTP requests (SSE streams too) get as long as running steps do; both drain at once.
    common: dict[str, Any] = {"log_config": None, "access_log": False,
                              "timeout_graceful_shutdown": max(1, round(settings.shutdown_timeout_s))}
    if workers > 1:
        db.dispose()  # each process opens its own
        config = uvicorn.Config(f"{__name__}:worker_app", factory=True, workers=workers, **common)
        try:
            _supervisor_class()(config, sockets=[sock]).run()
        finally:
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        from armillary.cli.chat import with_bot  # the chat bot beside the API, when configured (issue 18)

        config = uvicorn.Config(lambda: with_bot(_server_app(settings, db), db), factory=True, **common)
        uvicorn.Server(config).run(sockets=[sock])


def worker_app() -> Any:
    """The application of one ``--workers`` process: uvicorn imports this factory by name in a fresh
    interpreter, which reads its settings as the supervisor did (the supervisor migrated already)."""

    settings = replace(_settings(), auto_migrate=False)
    _configure_logging(settings)
    return _server_app(settings, settings.database())


def _server_app(settings: Settings, db: Any) -> Any:
    """The app of a server process, its engine's shutdown time set and its signals hooked.

    Built by uvicorn's ``config.load()`` in the serving process's main thread, after uvicorn took
    SIGTERM/SIGINT, so the hooks here run before uvicorn's own handlers.
    """
    from armillary.api.app import create_app

    app = create_app(settings, db)
    app.state.engine.shutdown_timeout_s = settings.shutdown_timeout_s
    _hook_signals(app)
    return app


def _hook_signals(app: Any) -> None:
    """SIGTERM/SIGINT: the engine stops claiming the moment the signal arrives (then uvicorn's handler
    closes the connections; the lifespan's ``engine.stop()`` waits out the drain). SIGHUP: ``_reload``."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals belong to the main thread; an embedded server has no signals of its own
    engine = app.state.engine
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def on_exit(signum: int, frame: Any, previous: Any = previous) -> None:
            engine.begin_stop()
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, on_exit)
    # Not in the handler itself: reconfiguring logging there could meet a lock the interrupted code holds.
    signal.signal(signal.SIGHUP, lambda signum, frame: threading.Thread(
        target=_reload, args=(app,), name="armillary-reload", daemon=True).start())


def _reload(app: Any) -> None:
    """SIGHUP in a server process: re-read the settings; apply logging and LDAP, keep the old ones on error."""
    try:
        fresh = _settings()
        _configure_logging(fresh)
    except (OSError, ValueError) as exc:
        log.error("SIGHUP: settings not reloaded, the previous ones stay: %s", exc)
        return
    settings = replace(app.state.settings, ldap=fresh.ldap, log_level=fresh.log_level, log_format=fresh.log_format)
    app.state.settings = app.state.engine.runtime.settings = settings
    log.info("SIGHUP: reloaded logging (level %s, format %s) and LDAP (%s)", fresh.log_level, fresh.log_format,
             "on" if fresh.ldap is not None else "off")


def _supervisor_class() -> Any:
    """uvicorn's process supervisor, except that SIGHUP is passed on to each process to reload in place."""
    from uvicorn.supervisors import Multiprocess

    class Supervisor(Multiprocess):
        def handle_hup(self) -> None:
            try:
                _configure_logging(_settings())
            except (OSError, ValueError) as exc:
                log.error("SIGHUP: logging not reloaded: %s", exc)
            log.info("SIGHUP: passed on to the server processes")
            for process in self.processes:
                if process.pid is not None and process.exitcode is None:
                    os.kill(process.pid, signal.SIGHUP)

    return Supervisor


def _settings() -> Settings:
    """Settings from the environment, with ARMILLARY_ENV_FILE's values over it (what SIGHUP re-reads)."""
    env = dict(os.environ)
    if env.get("ARMILLARY_ENV_FILE"):
        env.update(read_env_file(Path(env["ARMILLARY_ENV_FILE"])))
    return Settings.from_env(env)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's EnvironmentFile= reads them: blank lines and ``#``/``;`` comments
    skipped, one pair of matching quotes around a value removed (no escapes, no line continuations)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _configure_logging(settings: Settings) -> None:
    if settings.log_format not in logs.FORMATS:
        raise ValueError(f"ARMILLARY_LOG_FORMAT: {settings.log_format!r} is not one of {', '.join(logs.FORMATS)}")
    try:
        level = logs.level_named(settings.log_level)
    except ValueError as exc:
        raise ValueError(f"ARMILLARY_LOG_LEVEL: {exc}") from None
    logs.configure(json_lines=settings.log_format == "json", level=level)


def _refuse_sqlite(settings: Settings, workers: int) -> None:
    """Several processes on one SQLite file would wait on its single write lock, or worse: refuse."""
    from sqlalchemy.engine import make_url

    if make_url(settings.database_url).get_backend_name() == "sqlite":
        typer.echo(f"armillary serve: --workers {workers} needs PostgreSQL; several processes cannot share the "
                   f"SQLite database {_safe(settings.database_url)}. Set ARMILLARY_DATABASE_URL="
                   "postgresql://user@host/db, or run one process (--workers 1).", err=True)
        raise typer.Exit(2)


def _share_metrics_dir(settings: Settings) -> Path | None:
    """prometheus_client's multiprocess mode needs one directory for all the processes, empty at start
    (files left by earlier processes would be counted): a fresh one under the data directory, unless
    PROMETHEUS_MULTIPROC_DIR says where. Set before any process imports prometheus_client; the one
    made here (returned) is removed when the supervisor ends."""
    import tempfile

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    made = Path(tempfile.mkdtemp(prefix="prometheus-", dir=settings.data_dir))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(made)
    return made


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

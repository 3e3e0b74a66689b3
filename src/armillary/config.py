"""Process-wide settings, read from the environment.

Everything has a sane embedded default so `armillary serve` works on a fresh machine:
an SQLite file under the data directory and a generated secret key file beside it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platformdirs import user_data_dir

from armillary.domain.db import MAX_OVERFLOW, POOL_SIZE, Database


def _truthy(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


ENGINES = ("inline", "celery", "off")
BROKER_SCHEMES = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")


@dataclass(frozen=True)
class Settings:
    """What a process needs to know to reach its database and keys."""

    data_dir: Path
    database_url: str
    secret_key: str | None = None
    auto_migrate: bool = True
    log_json: bool = True
    # Job engine of this process: "inline" runs steps in a thread pool here; "off" serves the API only;
    # "celery" (PostgreSQL only) dispatches steps to `armillary worker` processes over a broker
    # (docs/distributed.md): ARMILLARY_BROKER_URL, redis://… or amqp://….
    engine: str = "inline"
    broker_url: str | None = None
    # Celery mode: queues steps are routed to ("hv.<hypervisor>", "env.<environment>"), declared by the
    # operator; every other step goes to the default queue "armillary". Same value in every process.
    routed_queues: tuple[str, ...] = ()
    # Celery mode: a queued step whose message was sent this long ago without being claimed is sent again.
    redeliver_s: float = 30.0
    workers: int = 32
    lease_s: float = 30.0
    # PostgreSQL: connections this process keeps, and may open beyond them under load (SQLite: ignored).
    db_pool_size: int = POOL_SIZE
    db_max_overflow: int = MAX_OVERFLOW
    # On SIGTERM/SIGINT: how long running steps may take to finish before their leases are handed back.
    shutdown_timeout_s: float = 30.0
    # `armillary serve`'s logging (SIGHUP re-reads both): a level name, and "text" or "json".
    log_level: str = "info"
    log_format: str = "text"
    # Lifetime of the tokens and browser sessions handed out by a login.
    login_ttl_s: int = 12 * 3600
    # Mark session cookies Secure even when this process sees plain HTTP (behind a TLS-terminating proxy).
    cookie_secure: bool = False
    # Login throttling (armillary.auth.throttle): failed logins allowed per account name and per client
    # address (0: no limit) before lockouts start; the first lockout, doubled at each further failure up to
    # the longest; failures are forgotten after a window without any (counted from the end of a lockout).
    login_max_failures: int = 5
    login_max_failures_per_address: int = 20
    login_lockout_s: float = 1.0
    login_max_lockout_s: float = 900.0
    login_failure_window_s: float = 900.0
    # Largest request body the API reads (source uploads have their own limit).
    max_body_bytes: int = 8 * 1024 * 1024
    # armillary.auth.ldap.LdapSettings when ARMILLARY_LDAP_URL is set, else None (local accounts only).
    ldap: Any = None
    # Uploaded deploy sources (POST /api/v1/sources): the largest tarball accepted, and how many bytes of
    # uploads each non-admin user may keep stored.
    source_max_bytes: int = 512 * 1024**2
    source_quota_bytes: int = 2 * 1024**3
    # Directories of the control host that types and deploys may take content from by a relative path
    # (None: such paths are refused): scripts of the script provisioner, Ansible playbooks (and roles/),
    # Puppet module tarballs, Salt states trees, deploy sources (and local git repositories of deploys
    # and Salt). Read by ``armillary.sources.Roots.from_settings``; nothing reads them from the environment.
    scripts_dir: Path | None = None
    playbooks_dir: Path | None = None
    puppet_modules_dir: Path | None = None
    salt_states_dir: Path | None = None
    deploy_sources_dir: Path | None = None
    # Bearer token GET /metrics requires (None: /metrics is open, as Prometheus exporters usually are).
    metrics_token: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.key"

    def database(self) -> Database:
        """This process's handle on ``database_url``, its PostgreSQL pool sized as configured."""
        return Database(self.database_url, self.db_pool_size, self.db_max_overflow)

    def check_engine(self) -> None:
        """Refuse an engine setting this process cannot run, with what to set instead (ValueError).

        Celery mode means several processes on one database: PostgreSQL only (an SQLite file has one
        writer, and its processes would wait on it or worse), and a broker to carry the messages.
        """
        if self.engine not in ENGINES:
            raise ValueError(f"ARMILLARY_ENGINE: {self.engine!r} is not one of {', '.join(ENGINES)}")
        if self.engine != "celery":
            return
        if self.database_url.startswith("sqlite"):
            raise ValueError("ARMILLARY_ENGINE=celery needs PostgreSQL: workers in several processes cannot "
                             "share an SQLite database; set ARMILLARY_DATABASE_URL=postgresql://user@host/db")
        if not self.broker_url or not self.broker_url.startswith(BROKER_SCHEMES):
            got = "nothing" if not self.broker_url else "another scheme"
            raise ValueError(f"ARMILLARY_ENGINE=celery needs ARMILLARY_BROKER_URL, a redis://… or amqp://… URL "
                             f"(got {got})")
        if importlib.util.find_spec("celery") is None:
            raise ValueError("ARMILLARY_ENGINE=celery needs Celery: pip install 'armillary[celery]'")
        for name in self.routed_queues:
            if not name.startswith(("hv.", "env.")) or len(name.split(".", 1)[1]) == 0:
                raise ValueError(f"ARMILLARY_ROUTED_QUEUES: {name!r} is not hv.<hypervisor> or "
                                 "env.<environment>")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("ARMILLARY_DATA_DIR") or user_data_dir("armillary", appauthor=False))
        database_url = env.get("ARMILLARY_DATABASE_URL") or f"sqlite:///{data_dir / 'armillary.db'}"
        return cls(
            data_dir=data_dir,
            database_url=database_url,
            secret_key=env.get("ARMILLARY_SECRET_KEY") or None,
            auto_migrate=_truthy(env.get("ARMILLARY_AUTO_MIGRATE"), True),
            log_json=_truthy(env.get("ARMILLARY_LOG_JSON"), True),
            engine=(env.get("ARMILLARY_ENGINE") or "inline").strip().lower(),
            broker_url=_secret(env.get("ARMILLARY_BROKER_URL")),
            routed_queues=tuple(q.strip() for q in (env.get("ARMILLARY_ROUTED_QUEUES") or "").split(",")
                                if q.strip()),
            redeliver_s=float(env.get("ARMILLARY_REDELIVER_SECONDS") or 30),
            workers=int(env.get("ARMILLARY_WORKERS") or 32),
            lease_s=float(env.get("ARMILLARY_LEASE_SECONDS") or 30),
            db_pool_size=_count(env, "ARMILLARY_DB_POOL_SIZE", POOL_SIZE, least=1),
            db_max_overflow=_count(env, "ARMILLARY_DB_MAX_OVERFLOW", MAX_OVERFLOW, least=0),
            shutdown_timeout_s=float(env.get("ARMILLARY_SHUTDOWN_TIMEOUT") or 30),
            log_level=(env.get("ARMILLARY_LOG_LEVEL") or "info").strip().lower(),
            log_format=(env.get("ARMILLARY_LOG_FORMAT") or "text").strip().lower(),
            login_ttl_s=int(env.get("ARMILLARY_LOGIN_TTL_SECONDS") or 12 * 3600),
            cookie_secure=_truthy(env.get("ARMILLARY_COOKIE_SECURE"), False),
            login_max_failures=int(env.get("ARMILLARY_LOGIN_MAX_FAILURES") or 5),
            login_max_failures_per_address=int(env.get("ARMILLARY_LOGIN_MAX_FAILURES_PER_ADDRESS") or 20),
            login_lockout_s=float(env.get("ARMILLARY_LOGIN_LOCKOUT_SECONDS") or 1),
            login_max_lockout_s=float(env.get("ARMILLARY_LOGIN_MAX_LOCKOUT_SECONDS") or 900),
            login_failure_window_s=float(env.get("ARMILLARY_LOGIN_FAILURE_WINDOW_SECONDS") or 900),
            max_body_bytes=int(env.get("ARMILLARY_MAX_BODY_BYTES") or 8 * 1024 * 1024),
            ldap=_ldap_settings(env),
            source_max_bytes=int(env.get("ARMILLARY_SOURCE_MAX_BYTES") or 512 * 1024**2),
            source_quota_bytes=int(env.get("ARMILLARY_SOURCE_QUOTA_BYTES") or 2 * 1024**3),
            scripts_dir=_path(env.get("ARMILLARY_SCRIPTS_DIR")),
            playbooks_dir=_path(env.get("ARMILLARY_PLAYBOOKS_DIR")),
            puppet_modules_dir=_path(env.get("ARMILLARY_PUPPET_MODULES_DIR")),
            salt_states_dir=_path(env.get("ARMILLARY_SALT_STATES_DIR")),
            deploy_sources_dir=_path(env.get("ARMILLARY_DEPLOY_SOURCES_DIR")),
            metrics_token=_secret(env.get("ARMILLARY_METRICS_TOKEN")),
        )


def _count(env: dict[str, str], name: str, default: int, least: int) -> int:
    value = (env.get(name) or "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < least:
        raise ValueError(f"{name}: {value!r} is not a whole number of at least {least}")
    return int(value)


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def _secret(value: str | None) -> str | None:
    """A secret setting, registered for masking so no log line ever shows it."""
    if not value:
        return None
    from armillary import redaction

    redaction.register(value)
    return value


def _ldap_settings(env: dict[str, str]) -> Any:
    if not env.get("ARMILLARY_LDAP_URL"):
        return None
    from armillary import redaction
    from armillary.auth.ldap import LdapSettings

    settings = LdapSettings.from_env(env)
    redaction.register(settings.bind_password)  # never in a log line, whatever logs the settings
    return settings

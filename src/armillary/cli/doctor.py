"""``armillary doctor``: is this installation able to run? Says what is missing, and how to add it.

Server side, like ``migrate``: it reads the same settings as ``armillary serve`` (ARMILLARY_DATA_DIR,
ARMILLARY_DATABASE_URL) and looks, changing nothing (a missing SQLite file is not created):

* **database** — reachable, and its schema at the head revision (else: ``armillary migrate``);
* **plugins** — per kind (drivers, transports, provisioners, workflows), which loaded and which are
  registered but failed to load, with why (``armillary.plugins.Registry.broken``);
* **Python extras** — the optional packages drivers, transports and provisioners import when they
  work (docker, libvirt, asyncssh, boto3, pyVmomi, ansible-runner, psycopg), with the ``pip install``
  line that adds each (``pip install 'armillary[docker]'``; all of them: ``armillary[all]``);
* **what is in use** — the drivers of the database's hypervisors and the provisioners of its types
  must be installed, loaded, and have their extras.

``✔`` is fine, ``!`` a warning (an extra nothing uses yet), ``✗`` a problem. The exit code is 1 when
there is a problem — the database unreachable or behind, a plugin broken, something in use missing —
and 0 otherwise, warnings included.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import typer

from armillary.config import Settings

OK, WARN, FAIL = "✔", "!", "✗"


@dataclass(frozen=True)
class Extra:
    """An extra of Armillary's pyproject.toml: the modules it brings, and what needs them."""

    name: str
    modules: tuple[str, ...]
    needed_by: str
    drivers: tuple[str, ...] = ()
    transports: tuple[str, ...] = ()
    provisioners: tuple[str, ...] = ()
    note: str = ""

    @property
    def install(self) -> str:
        return f"pip install 'armillary[{self.name}]'"


EXTRAS = (
    Extra(
        "docker",
        ("docker",),
        "the docker driver and the docker-exec transport",
        drivers=("docker",),
        transports=("docker-exec",),
    ),
    Extra(
        "libvirt",
        ("libvirt",),
        "the libvirt driver",
        drivers=("libvirt",),
        note="libvirt-python builds against the libvirt C library: install libvirt-dev (libvirt-devel) first",
    ),
    Extra(
        "ssh",
        ("asyncssh",),
        "the ssh driver, and the ssh transport that provisions libvirt, aws and vsphere machines",
        drivers=("ssh",),
        transports=("ssh",),
    ),
    Extra("aws", ("boto3",), "the aws driver", drivers=("aws",)),
    Extra("vsphere", ("pyVmomi",), "the vsphere driver", drivers=("vsphere",)),
    Extra("proxmox", ("proxmoxer", "requests"), "the proxmox driver", drivers=("proxmox",)),
    Extra("libcloud", ("libcloud",), "the libcloud driver", drivers=("libcloud",)),
    Extra("ansible", ("ansible_runner", "ansible"), "the ansible provisioner", provisioners=("ansible",)),
    Extra("postgres", ("psycopg",), "a PostgreSQL database"),
    Extra("celery", ("celery", "redis"), "Celery mode (ARMILLARY_ENGINE=celery, armillary worker)"),
)


@dataclass
class Report:
    """The findings, by section, and whether any is a problem."""

    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (section, mark, text)

    def add(self, section: str, mark: str, text: str) -> None:
        self.lines.append((section, mark, text))

    @property
    def problems(self) -> int:
        return sum(1 for _, mark, _ in self.lines if mark == FAIL)

    @property
    def warnings(self) -> int:
        return sum(1 for _, mark, _ in self.lines if mark == WARN)


def doctor() -> None:
    """Check this installation (database, schema, plugins, Python extras): what is missing, how to add it.

    Exit code 1 when something needed is broken or missing (warnings alone exit 0)."""
    logging.basicConfig(level=logging.ERROR)
    try:
        settings = Settings.from_env()
    except Exception as exc:  # noqa: BLE001 - a setting that cannot be read: nothing else can be checked
        typer.echo(
            f"Settings\n  {FAIL} the ARMILLARY_* environment variables cannot be read: "
            f"{type(exc).__name__}: {_first_line(exc)}"
        )
        raise typer.Exit(1) from None
    report = examine(settings)
    section = None
    for name, mark, text in report.lines:
        if name != section:
            typer.echo(f"{'' if section is None else chr(10)}{name}")
            section = name
        typer.echo(f"  {mark} {text}")
    verdict = (
        f"{report.problems} problem(s), {report.warnings} warning(s)"
        if report.problems or report.warnings
        else "everything is in order"
    )
    typer.echo(f"\n{FAIL if report.problems else OK} {verdict}")
    raise typer.Exit(1 if report.problems else 0)


def examine(settings: Settings) -> Report:
    """Every check, in order; nothing is changed."""
    report = Report()
    in_use = _check_database(settings, report)
    loaded = _check_plugins(report)
    _check_extras(settings, report, in_use, loaded)
    if settings.engine == "celery":
        _check_queues(settings, report)
    return report


def _check_queues(settings: Settings, report: Report) -> None:
    """Celery mode: the broker answers, and every queue with due steps has a worker consuming it."""
    section = "Celery queues"
    try:
        settings.check_engine()
        from armillary.engine.celery_executor import queue_status

        workers, waiting = queue_status(settings)
    except ValueError as exc:
        report.add(section, FAIL, str(exc))
        return
    except ImportError as exc:
        report.add(section, FAIL, f"Celery is not installed ({exc.name}): pip install 'armillary[celery]'")
        return
    except Exception as exc:  # noqa: BLE001 - the broker (or the database) cannot be reached
        report.add(section, FAIL, f"the broker cannot be asked: {type(exc).__name__}: {_first_line(exc)}")
        return
    answered = ", ".join(f"{name} ({', '.join(queues)})" for name, queues in sorted(workers.items()))
    report.add(section, OK if workers else WARN,
               f"broker reachable; {len(workers)} worker(s) answered: {answered or 'none'}")
    consumers = Counter(queue for queues in workers.values() for queue in queues)
    for queue in sorted({"armillary", *settings.routed_queues, *consumers, *waiting}):
        count, steps = consumers[queue], waiting[queue]
        if count:
            report.add(section, OK, f"queue {queue}: consumed by {count} worker{'s' if count != 1 else ''}"
                       + (f", {steps} step(s) due" if steps else ""))
        elif steps:
            wait = "steps wait" if steps != 1 else "step waits"
            report.add(section, FAIL, f"queue {queue}: {steps} {wait}; no worker consumes it: "
                       f"start one with `armillary worker --queues {queue}`")
        else:
            report.add(section, WARN, f"queue {queue}: no worker consumes it (no step waits for it now)")


# ---------------------------------------------------------------- database


def _check_database(settings: Settings, report: Report) -> dict[str, dict[str, list[str]]]:
    """Reachable and current; returns what the database uses: drivers and provisioners, by name → users."""
    from pathlib import Path

    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    from armillary.domain import migrate as migrations
    from armillary.domain.db import is_sqlite, normalize_url

    section = "Database"
    in_use: dict[str, dict[str, list[str]]] = {"driver": {}, "provisioner": {}}
    try:
        url = normalize_url(settings.database_url)
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception as exc:  # noqa: BLE001 - any unusable URL
        report.add(section, FAIL, f"ARMILLARY_DATABASE_URL cannot be used: {exc}")
        return in_use
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).exists():
            report.add(
                section,
                FAIL,
                f"{shown}: the database file does not exist yet; create it with "
                "`armillary migrate` (`armillary serve` does it on start)",
            )
            return in_use
    try:
        engine = create_engine(url, connect_args={} if is_sqlite(url) else {"connect_timeout": 10})
    except ImportError as exc:
        report.add(
            section,
            FAIL,
            f"{shown}: no database driver ({exc.name or exc}): pip install 'armillary[postgres]'",
        )
        return in_use
    try:
        try:
            current = migrations.current_revision(engine)
        except Exception as exc:  # noqa: BLE001 - any failure to connect
            report.add(section, FAIL, f"{shown}: cannot connect: {type(exc).__name__}: {_first_line(exc)}")
            return in_use
        report.add(section, OK, f"{shown}: reachable")
        head = migrations.head_revision()
        if current != head:
            report.add(
                section,
                FAIL,
                f"schema at {current or 'nothing (empty database)'}, the head is {head}: "
                "run `armillary migrate`",
            )
            return in_use
        report.add(section, OK, f"schema current ({head})")
        in_use = _in_use(engine)
    finally:
        engine.dispose()
    return in_use


def _in_use(engine: Any) -> dict[str, dict[str, list[str]]]:
    from sqlalchemy import select

    from armillary.domain.models import Hypervisor, SystemType

    in_use: dict[str, dict[str, list[str]]] = {"driver": {}, "provisioner": {}}
    with engine.connect() as conn:
        for name, driver in conn.execute(
            select(Hypervisor.name, Hypervisor.driver).order_by(Hypervisor.name)
        ):
            in_use["driver"].setdefault(driver, []).append(f"hypervisor {name}")
        rows = conn.execute(select(SystemType.name, SystemType.provisioner_kind).order_by(SystemType.name))
        for name, kind in rows:
            if kind and kind != "none":
                in_use["provisioner"].setdefault(kind, []).append(f"type {name}")
    return in_use


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


# ---------------------------------------------------------------- plugins


def _check_plugins(report: Report) -> dict[str, dict[str, Any]]:
    """Loaded and broken plugins of every kind; returns the loaded ones by kind."""
    from armillary.drivers.registry import broken_drivers, drivers
    from armillary.engine.workflows import broken_workflows, load_workflows
    from armillary.provisioners.base import PROVISIONERS
    from armillary.remote.base import broken_transports, transports

    kinds = {
        "driver": (drivers, broken_drivers),
        "transport": (transports, broken_transports),
        "provisioner": (PROVISIONERS.all, PROVISIONERS.broken),
        "workflow": (load_workflows, broken_workflows),
    }
    section = "Plugins"
    loaded: dict[str, dict[str, Any]] = {}
    for kind, (found, broken) in kinds.items():
        try:
            loaded[kind] = dict(found())
            failed = broken()
        except Exception as exc:  # noqa: BLE001 - a registry that cannot even be read
            report.add(section, FAIL, f"{kind}s cannot be listed: {type(exc).__name__}: {_first_line(exc)}")
            loaded[kind] = {}
            continue
        names = ", ".join(loaded[kind]) or "none"
        report.add(section, OK if loaded[kind] else WARN, f"{kind}s: {names}")
        for name, reason in sorted(failed.items()):
            report.add(section, FAIL, f"{kind} {name} is installed but failed to load: {reason}")
    return loaded


# ---------------------------------------------------------------- extras and what uses them


def _importable(module: str) -> str | None:
    """None when ``module`` imports; else why not."""
    try:
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - missing, or installed but broken (a shared library)
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return None


def _check_extras(
    settings: Settings,
    report: Report,
    in_use: dict[str, dict[str, list[str]]],
    loaded: dict[str, dict[str, Any]],
) -> None:
    from armillary.domain.db import is_sqlite

    section = "Python extras"
    drivers = loaded.get("driver", {})
    # The transports the drivers in use reach their machines with (provisioning and deploys need them).
    transports_in_use: dict[str, list[str]] = {}
    for driver, users in in_use["driver"].items():
        transport = getattr(drivers.get(driver), "transport", None)
        if transport:
            transports_in_use.setdefault(transport, []).extend(users)
    try:
        postgres = not is_sqlite(settings.database_url)
    except Exception:  # noqa: BLE001 - reported with the database
        postgres = False
    missing = []
    for extra in EXTRAS:
        why = next((w for w in map(_importable, extra.modules) if w), None)
        users = sorted(
            {
                *(u for d in extra.drivers for u in in_use["driver"].get(d, [])),
                *(u for t in extra.transports for u in transports_in_use.get(t, [])),
                *(u for p in extra.provisioners for u in in_use["provisioner"].get(p, [])),
            }
        )
        if extra.name == "postgres" and postgres:
            users.insert(0, "the database (ARMILLARY_DATABASE_URL)")
        if extra.name == "celery" and settings.engine == "celery":
            users.insert(0, "the engine (ARMILLARY_ENGINE=celery)")
        if why is None:
            report.add(section, OK, f"{extra.name}: {', '.join(extra.modules)} ({extra.needed_by})")
            continue
        missing.append(extra.name)
        hint = extra.install + (f" ({extra.note})" if extra.note else "")
        if users:
            report.add(
                section,
                FAIL,
                f"{extra.name}: missing, and needed by {', '.join(users)} "
                f"({extra.needed_by}): {hint} [{why}]",
            )
        else:
            report.add(
                section,
                WARN,
                f"{extra.name}: not installed; {extra.needed_by} cannot work without it: {hint}",
            )
    if len(missing) > 1:
        report.add(section, WARN, "every driver and provisioner extra at once: pip install 'armillary[all]'")
    _check_in_use(report, in_use, loaded)


def _check_in_use(
    report: Report, in_use: dict[str, dict[str, list[str]]], loaded: dict[str, dict[str, Any]]
) -> None:
    """What the database names must be installed and loaded."""
    section = "In use"
    for kind in ("driver", "provisioner"):
        for name, users in sorted(in_use[kind].items()):
            if name in loaded.get(kind, {}):
                report.add(section, OK, f"{kind} {name}: used by {', '.join(users)}")
            else:
                report.add(
                    section,
                    FAIL,
                    f"{kind} {name} is used by {', '.join(users)} but is not installed "
                    "(or failed to load, see Plugins)",
                )


def register(app: typer.Typer) -> None:
    app.command()(doctor)

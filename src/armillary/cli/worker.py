"""``armillary worker``: a Celery worker that runs job steps (``ARMILLARY_ENGINE=celery``).

Server side, like ``serve``: it reads the same settings (ARMILLARY_DATABASE_URL — PostgreSQL —,
ARMILLARY_BROKER_URL, ARMILLARY_SECRET_KEY, ARMILLARY_ROUTED_QUEUES, ARMILLARY_LEASE_SECONDS) and
works on the database directly. Run as many as you like, on as many machines: each consumes the
queues it is given (``--queues armillary,hv.vcenter-2``; default: the default queue ``armillary``),
with ``--concurrency`` threads. See docs/distributed.md for the production layout.
"""

from __future__ import annotations

import typer

from armillary.config import Settings


def worker(
    queues: str = typer.Option(
        "armillary",
        "--queues",
        "-Q",
        help="Comma-separated queues to consume: armillary (the default queue), hv.<hypervisor>, env.<environment>",
    ),
    concurrency: int = typer.Option(
        0,
        "--concurrency",
        "-c",
        min=0,
        help="Steps run at once in this process (default: ARMILLARY_WORKERS, 32)",
    ),
    loglevel: str = typer.Option("info", "--loglevel", "-l", help="debug, info, warning or error"),
    events: bool = typer.Option(
        False,
        "--events/--no-events",
        "-E",
        help="Send Celery task events (Flower turns them on by itself when it connects)",
    ),
) -> None:
    """Run job steps from the broker's queues (Celery mode: ARMILLARY_ENGINE=celery, PostgreSQL)."""
    from armillary import logs

    settings = Settings.from_env()
    try:
        if settings.engine != "celery":
            raise ValueError(
                f"armillary worker runs steps in Celery mode only: set ARMILLARY_ENGINE=celery "
                f"(it is {settings.engine!r}) in the API server's and the workers' environment"
            )
        settings.check_engine()
        level = logs.level_named(loglevel)
    except ValueError as exc:
        typer.echo(f"armillary worker: {exc}", err=True)
        raise typer.Exit(2) from None
    names = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in names if q != "armillary" and not q.startswith(("hv.", "env."))]
    if not names or bad:
        typer.echo(
            f"armillary worker: --queues: {', '.join(bad) or 'nothing given'}: each queue is armillary, "
            "hv.<hypervisor> or env.<environment>",
            err=True,
        )
        raise typer.Exit(2)
    logs.configure(json_lines=settings.log_format == "json", level=level)
    from armillary.engine.celery_executor import run_worker

    try:
        code = run_worker(
            settings, names, concurrency or settings.workers, loglevel=loglevel.upper(), events=events
        )
    except ValueError as exc:
        typer.echo(f"armillary worker: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command()(worker)

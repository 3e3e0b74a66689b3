"""The FastAPI application: routers under /api/v1, problem+json errors, request ids, YAML bodies.

Routers are peers, one module per resource: none imports another. What several need is apart, in
modules that define no router: ``lookups`` (loading by reference with the access check), ``views``
(rows as output models), ``job_start`` (Idempotency-Key, the 202), ``audit_trail`` (``note`` and the
middleware), ``deps``, ``security``, ``problems``. A new router is a module with ``router``, added to
``routers`` below (the order there is the order of the routes and of the OpenAPI document).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from armillary import __version__, web
from armillary.api import (
    actions,
    audit,
    auth,
    dns_zones,
    drivers,
    environments,
    exports,
    forget,
    groups,
    health,
    hypervisor_checks,
    hypervisors,
    ip_addresses,
    ip_pools,
    jobs,
    metrics,
    openapi,
    problems,
    releases,
    schedules,
    sources,
    systems,
    types,
    users,
    variables,
)
from armillary.api import attention, checks, findings, fleet_audits, remediations  # audits (issue 20)
from armillary.api import cluster_policies, clusters, profiles, receivers  # clusters (issue 15)
from armillary.api import subscriptions  # notifications (issue 18)
from armillary.api import stacks  # stacks (issue 19)
from armillary.api import chat  # the chat bot (issue 18)
from armillary.api.audit_trail import AuditMiddleware
from armillary.api.bodies import BodyGuardMiddleware
from armillary.api.live_events import JobEventWatch
from armillary.api.middleware import OptionsMiddleware, RequestIdMiddleware
from armillary.api.security import credentials_refusal, current_principal, document_permissions
from armillary.api.tracing_middleware import install as install_tracing
from armillary.config import Settings
from armillary.domain import migrate
from armillary.domain.db import Database
from armillary.domain.secrets import box_for
from armillary.engine.dispatch import Executor
from armillary.engine.service import Engine
from armillary.metrics import process_ended, watch_pool
from armillary.notify import service as notify_service

log = logging.getLogger("armillary.app")

API_PREFIX = "/api/v1"


def _executor(settings: Settings, db: Database) -> Executor | None:
    """Celery mode: steps go to ``armillary worker`` processes (docs/distributed.md); else the inline pool."""
    if settings.engine != "celery":
        return None
    from armillary.engine.celery_executor import CeleryExecutor

    return CeleryExecutor.from_settings(settings, db)


def create_app(settings: Settings | None = None, db: Database | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    db = db or settings.database()
    watch_pool(db.engine)  # armillary_db_pool_checked_out_connections

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.auto_migrate:
            migrate.upgrade(db)
            log.info("database schema at %s", migrate.head_revision())
        if settings.engine in ("inline", "celery"):  # celery: dispatch, reaper, locks, schedules; no steps
            app.state.engine.start()
            if notify_service.enabled():  # notifications (issue 18): events collected, deliveries sent
                app.state.notify = notify_service.NotifyService(db, app.state.secret_box)
                app.state.notify.start()
        # Start-up objects live as long as the process: keep them out of every full GC pass, which
        # otherwise walks them all and shows up as ~30 ms at p99 (measured by bench/inventory.py).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            app.state.engine.stop()
            await app.state.job_event_watch.aclose()
            if app.state.notify is not None:
                app.state.notify.stop()
            db.dispose()
            process_ended()  # multi-process metrics: this process's live gauges leave the sums

    app = FastAPI(
        title="Armillary",
        version=__version__,
        summary="Provisioning and fleet automation: describe a machine once, Armillary does the rest.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.secret_box = box_for(settings.secret_key, settings.secret_key_file)
    app.state.engine = Engine(db, app.state.secret_box, workers=settings.workers, lease_s=settings.lease_s,
                              executor=_executor(settings, db))
    app.state.engine.runtime.data_dir = settings.data_dir
    app.state.engine.runtime.settings = settings
    app.state.notify = None  # the NotifyService, once started
    app.state.job_event_watch = JobEventWatch(db)  # wakes SSE followers (api/live_events.py)

    # Every route of these routers needs credentials; only the login routes and the webhooks are outside them.
    routers = (environments, hypervisors, hypervisor_checks, types, systems, actions, groups, variables, drivers,
               jobs, schedules, releases, sources, auth, users, audit, ip_pools, ip_addresses, dns_zones, forget,
               exports, profiles, clusters, cluster_policies, receivers,
               checks, fleet_audits, findings, remediations, attention, subscriptions, stacks, chat)
    guarded = [*(module.router for module in routers), systems.labels_router, dns_zones.records_router,
               subscriptions.events_router]
    for router in [*guarded, auth.public_router, receivers.hooks_router]:
        document_permissions(router)
    # Included straight into the app, not through an intermediate /api/v1 router: FastAPI matches an
    # included router by walking its children (twice: to match, then to handle), so each level of
    # nesting costs every request a walk over every router (routing POST /systems/{ref}/actions: 142 → 57 µs).
    for router in guarded:
        app.include_router(router, prefix=API_PREFIX, dependencies=[Depends(current_principal)])
    app.include_router(auth.public_router, prefix=API_PREFIX)
    app.include_router(receivers.hooks_router, prefix=API_PREFIX)  # open: each call proves itself (HMAC)
    app.include_router(health.router)
    app.include_router(metrics.router)  # /metrics: its own optional token, no account

    web.install(app)  # the console at / (armillary.web), or a page saying how to build it

    problems.install(app)
    openapi.install(app, API_PREFIX)  # every operation declares its problem answers
    app.add_middleware(
        BodyGuardMiddleware, max_body=settings.max_body_bytes, api_prefix=API_PREFIX,
        public=frozenset(API_PREFIX + route.path for route in auth.public_router.routes),
        public_prefixes=(API_PREFIX + receivers.HOOK_PREFIX,),
        streamed=frozenset({API_PREFIX + sources.router.prefix}), authenticate=credentials_refusal,
    )
    app.add_middleware(OptionsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.add_middleware(AuditMiddleware)
    install_tracing(app)  # outermost: its span covers the whole request
    return app

"""GET /metrics: the Prometheus exposition of this process (or of all processes, in multi-process mode).

At the root, beside /healthz, not under /api/v1: Prometheus scrapes with a static bearer token, not
with an Armillary account. ``ARMILLARY_METRICS_TOKEN`` (``settings.metrics_token``) is that token;
unset, the endpoint is open, as exporters usually are (it shows counts and timings, never names of
systems or secrets). What is recorded where: ``armillary.metrics``; what each metric means:
docs/metrics.md.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from datetime import datetime

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily
from sqlalchemy import bindparam, case, func, or_, select, type_coerce

from armillary.domain.db import Database
from armillary.domain.errors import Unauthorized
from armillary.domain.jobs import Job, Lock, Step, StepStatus
from armillary.domain.models import UTCDateTime, utcnow
from armillary.metrics import Exposition

router = APIRouter(tags=["metrics"])

_steps, _jobs, _locks = Step.__table__, Job.__table__, Lock.__table__
_sibling = _steps.alias("sibling")
# When a queued step became due. There is no column for it, so: its retry time (retries and steps put
# back by the reaper), else when the step before it finished (it was queued in that transaction), else
# when its job got its lock (its first steps were queued then), else when its job was created.
_DUE_SINCE = func.coalesce(
    _steps.c.next_attempt_at,
    select(func.max(_sibling.c.finished_at)).where(_sibling.c.job_id == _steps.c.job_id).scalar_subquery(),
    select(_locks.c.acquired_at).where(_locks.c.job_id == _steps.c.job_id).limit(1).scalar_subquery(),
    _jobs.c.created_at,
)
_DUE = or_(_steps.c.next_attempt_at.is_(None), _steps.c.next_attempt_at <= bindparam("b_now"))
# One query per scrape: how many steps are queued, and since when the longest-waiting due one is due.
_QUEUE = (
    select(func.count(), type_coerce(func.min(case((_DUE, _DUE_SINCE))), UTCDateTime()))
    .select_from(_steps.join(_jobs, _steps.c.job_id == _jobs.c.id))
    .where(_steps.c.status == StepStatus.QUEUED.value)
)


def queue_stats(db: Database, now: datetime | None = None) -> tuple[int, float]:
    """Steps queued (waiting for a worker, or for their retry time), and how many seconds the oldest
    due one has waited (0 when none is due)."""
    now = now or utcnow()
    with db.engine.connect() as conn:
        count, oldest = conn.execute(_QUEUE, {"b_now": now}).one()
    return count, max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


class QueueCollector:
    """The queue gauges, read from the database when scraped (one query), so recording a step costs nothing
    more and every process of a deployment reports the same, shared queue."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth, oldest_s = queue_stats(self.db)
        yield GaugeMetricFamily("armillary_queued_steps", "Steps queued to run (due, or waiting for a retry)",
                                value=depth)
        yield GaugeMetricFamily("armillary_oldest_queued_step_age_seconds",
                                "How long the longest-waiting due step has waited for a worker", value=oldest_s)


def _presented(request: Request, token: str) -> bool:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}, 401: {"description": "Token missing or wrong"}})
def metrics(request: Request) -> Response:
    """The process's metrics in Prometheus's text format (OpenMetrics when asked for). Needs
    ``Authorization: Bearer <ARMILLARY_METRICS_TOKEN>`` when that setting is set."""
    token = request.app.state.settings.metrics_token
    if token and not _presented(request, token):
        raise Unauthorized("/metrics needs 'Authorization: Bearer <token>' (the server's ARMILLARY_METRICS_TOKEN)")
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    body = encoder(Exposition(QueueCollector(request.app.state.db)))
    return Response(body, headers={"Content-Type": content_type})

"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from armillary.api.security import public
from armillary.domain.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", openapi_extra=public())
def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz", openapi_extra=public())
def readyz(request: Request) -> JSONResponse:
    """The database answers and its schema is at the migration head."""
    db = request.app.state.db
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        current, head = current_revision(db.engine), head_revision()
    except Exception as exc:  # any failure to reach the DB means not ready
        return JSONResponse({"status": "unavailable", "database": f"unreachable: {type(exc).__name__}"}, 503)
    if current != head:
        return JSONResponse(
            {"status": "unavailable", "database": "ok", "schema": f"at {current}, head is {head}: run armillary migrate"},
            503,
        )
    return JSONResponse({"status": "ok", "database": "ok", "schema": current})

"""RFC 9457 problem details for every error the API returns.

Each problem has a stable ``type`` (``urn:armillary:problem:<slug>``) clients can switch on,
a ``title``, the HTTP ``status``, a human ``detail`` and, for validation, ``errors``: one entry
per bad field with its dotted path (``machine.cpu``) and the reason. Unexpected errors (500) are
answered by ``RequestIdMiddleware`` so that they too carry the request id.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from armillary.domain.errors import DomainError

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("armillary.api")


def problem_type(slug: str) -> str:
    return f"urn:armillary:problem:{slug}"


def problem_response(
    status: int, slug: str, title: str, detail: str, request: Request | None = None, **extra: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": problem_type(slug), "title": title, "status": status, "detail": detail}
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["request_id"] = request_id
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON)


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:]
    path = ""
    for part in parts:
        if part.isdigit():
            path += f"[{part}]"
        elif not part.startswith("function-") and part not in {"int", "str"}:
            path += ("." if path else "") + part
    return path or "body"


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    errors = []
    for err in exc.errors():
        message = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        errors.append({"field": _field_path(tuple(err.get("loc", ()))), "message": message, "code": err.get("type")})
    return errors


async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = _validation_errors(exc)
    if any(e["code"] == "json_invalid" for e in errors):
        detail = next(str(e.get("ctx", {}).get("error", "")) for e in exc.errors() if e["type"] == "json_invalid")
        return problem_response(400, "malformed-body", "Malformed request body", f"invalid JSON: {detail}", request)
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
    if len(errors) > 5:
        detail += f"; and {len(errors) - 5} more"
    return problem_response(422, "validation-error", "Invalid request", detail, request, errors=errors)


async def _on_domain(request: Request, exc: DomainError) -> JSONResponse:
    response = problem_response(exc.status, exc.slug, exc.title, exc.detail, request, errors=exc.errors, **exc.extra)
    response.headers.update(getattr(exc, "headers", {}))
    return response


async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    slugs = {404: "not-found", 405: "method-not-allowed", 401: "unauthorized", 403: "forbidden"}
    response = problem_response(
        exc.status_code,
        slugs.get(exc.status_code, f"http-{exc.status_code}"),
        str(exc.detail) if exc.status_code != 404 else "Not found",
        str(exc.detail),
        request,
    )
    for key, value in (exc.headers or {}).items():
        response.headers[key] = value
    return response


async def _on_integrity(request: Request, exc: IntegrityError) -> JSONResponse:
    log.warning("integrity error: %s", exc.orig)
    return problem_response(
        409, "conflict", "Conflict", "the change conflicts with existing data (a duplicate or a dangling reference)",
        request,
    )


async def _on_stale(request: Request, exc: StaleDataError) -> JSONResponse:
    return problem_response(
        412, "precondition-failed", "Precondition failed", "the resource was changed by someone else; reload it",
        request,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(DomainError, _on_domain)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(IntegrityError, _on_integrity)
    app.add_exception_handler(StaleDataError, _on_stale)

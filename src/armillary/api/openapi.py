"""The OpenAPI document says every answer an operation can give, so generated clients can trust it.

FastAPI documents the success answer of each route and a 422 shaped as its own validation error;
the server's errors are RFC 9457 problems (``problems.py``) from several layers: the body guard
(400, 401, 413, 422), the credentials check (401), the access checks (403, 404, 409 for a locked
environment), validation (422) and the database (409 for a conflict, 412 for a stale copy).

``install`` post-processes the generated document once, for every operation under the API prefix,
so a router added later gets the same declarations without doing anything:

- an operation with credentials: 401, 403 and 404 (``security.AUTH_RESPONSES`` describes them);
- an operation with parameters or a body: 422; with a body: also 400 (malformed) and 413 (too large);
- a write (POST/PUT/PATCH/DELETE): 409 (conflict, locked environment) and, but for POST, 412
  (``If-Match`` on a stale copy);
- every ``cursor`` query parameter has the pattern ``deps.decode_cursor`` accepts;
- every operation: 503 with ``Retry-After`` (the database cannot serve now: ``failures.database_unavailable``,
  answered by ``middleware.RequestIdMiddleware``);
- every 4xx answer, these and those a route declares itself (``responses={415: ...}``), and the 503 have the
  content type ``application/problem+json`` and the ``Problem`` schema.

A route that can give another status declares it in its decorator's ``responses``; only the
description is needed there, the content is added here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from armillary.api.deps import CURSOR_PATTERN
from armillary.api.problems import PROBLEM_JSON

WRITES = frozenset({"post", "put", "patch", "delete"})
METHODS = frozenset({"get", "head", "options", "trace", *WRITES})
DESCRIPTIONS = {
    400: "Malformed request body (not JSON or YAML, or not in its declared encoding)",
    401: "No valid credentials (missing, invalid, expired or revoked token)",
    403: "Visible, but the caller's role does not allow this (or the quota is spent)",
    404: "Not found, or in an environment the caller has no role in",
    409: "Conflicts with the current state (a duplicate, something still in use, a locked environment)",
    412: "If-Match names an older version of the resource; reload it",
    413: "Request body larger than the server accepts",
    422: "Invalid request: `errors` names each bad field",
}
UNAVAILABLE = {
    "description": "The database cannot serve now (out of connections, restarting, busy): try again after "
                   "Retry-After seconds",
    "headers": {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}},
}


class FieldProblem(BaseModel):
    """One bad field of a request."""

    model_config = ConfigDict(extra="allow")
    field: str | None = Field(None, description="Dotted path of the field (`machine.cpu`, `labels[2]`)")
    message: str | None = None
    code: str | None = Field(None, description="Machine-readable reason (pydantic's error type)")


class Problem(BaseModel):
    """An RFC 9457 problem; some carry more members (``retry_after``, ``current_etag``, the running job...)."""

    model_config = ConfigDict(extra="allow", title="Problem")
    type: str = Field(description="Stable identifier clients switch on: `urn:armillary:problem:<slug>`")
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="The request's path")
    request_id: str | None = Field(None, description="The request's X-Request-ID")
    errors: list[FieldProblem] | None = None


def install(app: FastAPI, api_prefix: str) -> None:
    """Make ``app.openapi()`` declare the problem answers of every operation (see the module doc)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        first = app.openapi_schema is None
        document = build()
        if first:
            declare_problems(document, api_prefix)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def declare_problems(document: dict[str, Any], api_prefix: str) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (Problem, FieldProblem):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            if path.startswith(api_prefix + "/"):
                _cursor_pattern(operation)
                for status in expected_problems(method, operation):
                    operation["responses"].setdefault(str(status), {"description": DESCRIPTIONS[status]})
                operation["responses"].setdefault("503", dict(UNAVAILABLE))
            _problem_content(operation["responses"])
    if "HTTPValidationError" in schemas and '"#/components/schemas/HTTPValidationError"' not in str(document):
        schemas.pop("HTTPValidationError")
        schemas.pop("ValidationError", None)


def expected_problems(method: str, operation: dict[str, Any]) -> set[int]:
    """The problem statuses any operation of this shape can answer (see the module doc)."""
    statuses: set[int] = set()
    if operation.get("security"):
        statuses |= {401, 403, 404}
    if operation.get("parameters") or operation.get("requestBody"):
        statuses.add(422)
    if operation.get("requestBody"):
        statuses |= {400, 413}
    if method in WRITES:
        statuses.add(409)
        if method != "post":
            statuses.add(412)
    return statuses


def _cursor_pattern(operation: dict[str, Any]) -> None:
    """Every ``cursor`` query parameter has the one shape ``deps.decode_cursor`` accepts."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "query" and parameter.get("name") == "cursor":
            schema = parameter.get("schema", {})
            for branch in schema.get("anyOf", [schema]):
                if branch.get("type") == "string":
                    branch["pattern"] = CURSOR_PATTERN
                    branch.pop("maxLength", None)


def _problem_content(responses: dict[str, Any]) -> None:
    for status, response in responses.items():
        if status[:1] == "4" or status == "503":
            response["content"] = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}

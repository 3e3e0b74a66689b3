"""Errors the domain raises; the API turns each into an RFC 9457 problem with a stable type."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of expected failures: each class has an HTTP status and a stable problem slug."""

    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extra = extra


class NotFound(DomainError):
    status, slug, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    status, slug, title = 409, "conflict", "Conflict"


class InUse(Conflict):
    slug, title = "in-use", "Still in use"


class PreconditionFailed(DomainError):
    status, slug, title = 412, "precondition-failed", "Precondition failed"


class InvalidInput(DomainError):
    """A well-formed request that names something wrong: a field-level error."""

    status, slug, title = 422, "validation-error", "Invalid request"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", errors=[{"field": field, "message": message}])


def invalid_from_pydantic(prefix: str, exc: Any) -> InvalidInput:
    """Turn a pydantic ``ValidationError`` on a nested document into a 422 naming each field."""
    errors = []
    for err in exc.errors():
        path = prefix
        for part in err.get("loc", ()):
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = "unknown field" if err.get("type") == "extra_forbidden" else err.get("msg", "invalid")
        errors.append({"field": path, "message": message, "code": err.get("type")})
    problem = InvalidInput(errors[0]["field"], errors[0]["message"]) if errors else InvalidInput(prefix, "invalid")
    problem.errors = errors or problem.errors
    problem.detail = "; ".join(f"{e['field']}: {e['message']}" for e in problem.errors)
    return problem

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


class UnknownReference(InvalidInput):
    """A well-formed reference in a request that names nothing (or nothing the caller may see).

    Its error carries ``code: unknown-reference``: the request had the documented shape, and what it
    named does not exist; no schema can say which names exist, clients (and the contract tests) tell
    this apart from a malformed value by the code."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(field, message)
        self.errors = [{"field": field, "message": message, "code": "unknown-reference"}]


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


class Unauthorized(DomainError):
    """No valid credentials. The detail never says which part of a login was wrong."""

    status, slug, title = 401, "unauthorized", "Authentication required"
    headers = {"WWW-Authenticate": 'Bearer realm="armillary"'}


class TooManyRequests(DomainError):
    """Refused before any work: too many failed attempts; ``retry_after`` seconds until the next is heard.

    The answer carries ``Retry-After`` and ``retry_after`` (seconds) in its body."""

    status, slug, title = 429, "too-many-attempts", "Too many attempts"

    def __init__(self, detail: str, retry_after: int, **extra: Any) -> None:
        super().__init__(detail, retry_after=retry_after, **extra)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class Forbidden(DomainError):
    """Known and visible to the caller, but their role does not allow this."""

    status, slug, title = 403, "forbidden", "Not allowed"


class QuotaExceeded(Forbidden):
    slug, title = "quota-exceeded", "Quota exceeded"


class EnvironmentLocked(Conflict):
    """A change inside a locked environment, by someone other than an admin: says who, when and why."""

    slug, title = "environment-locked", "Environment is locked"

    def __init__(self, env: Any) -> None:
        by = f" by {env.locked_by}" if env.locked_by else ""
        when = f" since {env.locked_at:%Y-%m-%d %H:%M} UTC" if env.locked_at else ""
        why = f": {env.lock_reason}" if env.lock_reason else ""
        super().__init__(
            f"environment {env.name!r} is locked{by}{when}{why}; only admins may change it until it is unlocked",
            locked_by=env.locked_by, locked_at=env.locked_at.isoformat() if env.locked_at else None,
            lock_reason=env.lock_reason,
        )

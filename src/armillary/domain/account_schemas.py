"""Pydantic shapes of users, roles, quotas, tokens, logins and audit events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BeforeValidator, Field, StrictBool, StringConstraints

from armillary.domain.schemas import Input, json_int, Output, size_in

UserName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.@-]{0,62}$", to_lower=True)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024, strip_whitespace=False)]
# A password being set: passwords.MIN_PASSWORD_LENGTH, stated in the schema too.
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=1024, strip_whitespace=False)]
RoleName = Literal["operator", "user", "viewer"]


class LoginRequest(Input):
    username: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    password: Password


class LoginOut(Output):
    token: str = Field(description="Send as 'Authorization: Bearer <token>'; shown only now")
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime | None
    user: str


class SessionOut(Output):
    csrf_token: str = Field(description="Echo in the X-CSRF-Token header of every write made with the cookie")
    expires_at: datetime | None
    user: str


class QuotaIn(Input):
    max_systems: json_int(ge=0, le=1_000_000) | None = Field(None)
    max_cpu: json_int(ge=0, le=10_000_000) | None = Field(None)
    max_memory: Annotated[Annotated[int, Field(ge=0, le=2**31 - 1)], BeforeValidator(size_in("MiB"))] | None = Field(
        None, description="MiB, or a size such as '64G'"
    )


class GrantIn(QuotaIn):
    role: RoleName


class Usage(Output):
    systems: int
    cpu: int
    memory_mb: int


class Quota(Output):
    max_systems: int | None
    max_cpu: int | None
    max_memory_mb: int | None


class GrantOut(Output):
    environment: str
    environment_id: int
    role: str
    source: str
    quota: Quota
    usage: Usage


class UserCreate(Input):
    name: UserName
    password: NewPassword | None = Field(None, description="Local password (at least 8 characters)")
    display_name: Annotated[str, StringConstraints(max_length=255)] = ""
    email: Annotated[str, StringConstraints(max_length=255)] | None = None
    admin: StrictBool = False


class UserUpdate(Input):
    password: NewPassword | None = None
    display_name: Annotated[str, StringConstraints(max_length=255)] | None = None
    email: Annotated[str, StringConstraints(max_length=255)] | None = None
    admin: StrictBool | None = None
    active: StrictBool | None = Field(None, description="false: refuse their logins and every token at once")


class UserOut(Output):
    id: int
    name: str
    display_name: str
    email: str | None
    source: str
    admin: bool
    active: bool
    last_login_at: datetime | None
    created_at: datetime
    roles: list[GrantOut]


class PasswordChange(Input):
    current_password: Password
    password: NewPassword


class TokenCreate(Input):
    name: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    expires_in_days: json_int(ge=1, le=3650) | None = Field(90, description="null: never expires")


class TokenOut(Output):
    id: int
    name: str
    kind: str
    user: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The secret; shown only in this answer")


class AuditChangeOut(Output):
    resource_type: str = Field(description="The table of the resource, e.g. systems, hypervisors")
    resource_id: str
    op: Literal["create", "update", "delete"]
    fields: dict[str, Any] = Field(
        description='Field -> {"old": ..., "new": ...} (no "old" on a create, no "new" on a delete), '
                    'or "changed" for a secret; a long value is {"truncated": true, "chars": n, "preview": ...}'
    )


def _time_text(value: Any) -> Any:
    """A time in JSON is a string: lax pydantic would also take a number (a Unix time), which the
    document's ``date-time`` string does not allow."""
    if not isinstance(value, str):
        raise ValueError("Input should be an ISO 8601 date-time string with a zone")  # noqa: TRY004 (pydantic)
    return value


class AuditPruneIn(Input):
    before: Annotated[AwareDatetime, BeforeValidator(_time_text)] = Field(description="Delete the rows written before this time (ISO 8601 with a zone)")
    force: StrictBool = Field(False, description="Allow a time more recent than the minimum age")
    dry_run: StrictBool = Field(False, description="Count what would be deleted, delete nothing")


class AuditPruneOut(Output):
    before: datetime
    dry_run: bool
    events: int = Field(description="Audit rows deleted (or that would be)")
    changes: int = Field(description="Change records deleted with them")
    oldest: datetime | None = Field(description="Time of the oldest row deleted")
    newest: datetime | None = Field(description="Time of the newest row deleted")


class AuditOut(Output):
    id: int
    at: datetime
    user_id: int | None
    username: str | None
    source_address: str | None
    method: str
    path: str
    action: str | None
    resource_type: str | None
    resource_id: str | None
    status: int
    outcome: str
    request_id: str | None
    detail: dict[str, Any]
    changes: list[AuditChangeOut] = Field(default_factory=list, description="What the request changed")




class LoginThrottleOut(Output):
    scope: Literal["user", "address"] = Field(description="An account name, or a client address")
    key: str = Field(description="The (lower-cased) name, or the address")
    failures: int = Field(description="Failed logins counted (the limit-th starts the lockouts)")
    locked_until: datetime | None = Field(description="Logins refused (429) until then; may be past")
    reset_at: datetime = Field(description="When the count is forgotten if nothing more fails")

"""Pydantic shapes of the notifications API: subscriptions, their targets, deliveries, events."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StringConstraints

from armillary.domain.schemas import Description, Input, Labels, Name, Output, Ref

EventName = Literal["job.finished", "job.failed", "cluster.scaled", "audit.kicked_out", "environment.locked",
                    "environment.unlocked", "quota.nearly_spent"]
JobStatusName = Literal["succeeded", "failed", "cancelled"]
Action = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,62}$")]
Url = Annotated[str, StringConstraints(pattern=r"^https?://[^\s/?#]+[^\s]*$", max_length=2000)]
Address = Annotated[str, StringConstraints(pattern=r"^[^@\s<>,;\"]{1,64}@[^@\s<>,;\"]{1,255}$", max_length=320)]
Room = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x20,]{1,255}$")]
Secret = Annotated[str, StringConstraints(min_length=16, max_length=255, pattern=r"^[\x21-\x7e]+$")]


class WebhookTarget(Input):
    kind: Literal["webhook"]
    url: Url
    format: Literal["armillary", "slack", "mattermost"] = "armillary"


class EmailTarget(Input):
    kind: Literal["email"]
    to: list[Address] = Field(..., min_length=1, max_length=20)


class ChatTarget(Input):
    kind: Literal["chat"]
    connection: Name = Field(..., description="The chat connection (armillary chat) that posts it")
    room: Room = Field(..., description="A channel (#ops), a multi-user chat room or a JID / nick")


Target = Annotated[WebhookTarget | EmailTarget | ChatTarget, Field(discriminator="kind")]


class SubscriptionCreate(Input):
    name: Name
    description: Description = ""
    environment: Ref | None = Field(None, description="Only this environment's events; none: all (admins only)")
    events: list[EventName] = Field(default_factory=list, max_length=8, description="Empty: every kind")
    labels: Labels = Field(default_factory=dict, max_length=20, description="Labels the job's system must carry")
    actions: list[Action] = Field(default_factory=list, max_length=50, description="Job actions; empty: any")
    statuses: list[JobStatusName] = Field(default_factory=list, max_length=3, description="Job statuses; empty: any")
    target: Target
    secret: Secret | None = Field(None, description="Webhook signing secret (write-only); made when absent")
    enabled: StrictBool = True


class SubscriptionUpdate(Input):
    description: Description | None = None
    events: list[EventName] | None = Field(None, max_length=8)
    labels: Labels | None = Field(None, max_length=20)
    actions: list[Action] | None = Field(None, max_length=50)
    statuses: list[JobStatusName] | None = Field(None, max_length=3)
    target: Target | None = None
    enabled: StrictBool | None = None


class RefOut(Output):
    id: int
    name: str


class SubscriptionOut(Output):
    id: int
    name: str
    description: str
    environment: RefOut | None
    events: list[str]
    labels: dict[str, str]
    actions: list[str]
    statuses: list[str]
    target: dict[str, Any]
    has_secret: bool
    enabled: bool
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    version: int
    secret: str | None = Field(None, description="Only in the answer of a create or a rotate: keep it now")


class AttemptOut(Output):
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    outcome: str


class DeliveryOut(Output):
    id: int
    idempotency_id: str
    subscription_id: int
    event_id: int
    event: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    latency_ms: int | None
    text: str
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    log: list[AttemptOut] = Field(default_factory=list, description="Every try, oldest first")


class EventOut(Output):
    id: int
    kind: str
    environment_id: int | None
    text: str
    data: dict[str, Any]
    occurred_at: datetime
    created_at: datetime

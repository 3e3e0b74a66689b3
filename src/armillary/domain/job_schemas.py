"""API shapes of jobs, actions, bulk job specs and schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from armillary.domain.schemas import Hostname, Id, Input, json_int, JsonObject, Labels, Name, Ref
from armillary.domain.states import ACTIONS

Action = Literal["create", "provision", "deploy", "rollback", "destroy", "stage", "stop", "start", "reload", "clone"]


class ActionRequest(Input):
    action: Action
    params: JsonObject = Field(default_factory=dict, description="Action parameters, e.g. {'release': 'v2'}")
    hostname: Hostname | None = Field(None, description="clone only: the new system's hostname")


def _criterion(field: str, given: dict[str, Any]) -> dict[str, Any]:
    return {"required": [field], "properties": {field: given}}


class Selector(Input):
    # What _not_everything refuses, stated in the OpenAPI document: at least one criterion is given.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        _criterion("labels", {"type": "object", "minProperties": 1}),
        _criterion("environment", {"not": {"type": "null"}}),
        _criterion("type", {"not": {"type": "null"}}),
        _criterion("state", {"type": "string"}),
        _criterion("systems", {"type": "array", "minItems": 1}),
    ]})

    labels: Labels = Field(default_factory=dict)
    environment: Ref | None = None
    type: Ref | None = None
    state: str | None = Field(None, max_length=31)
    systems: list[Id | Hostname] | None = Field(
        None, max_length=10000, description="Explicit system ids or hostnames"
    )

    @model_validator(mode="after")
    def _not_everything(self) -> "Selector":
        if not (self.labels or self.environment is not None or self.type is not None or self.state is not None
                or self.systems):
            raise ValueError("a selector needs at least one criterion (labels, environment, type, state or systems)")
        return self


class JobSpec(Input):
    action: Action
    selector: Selector
    concurrency: json_int(ge=1, le=500) = Field(10)
    batch_size: json_int(ge=1, le=100000) | None = Field(None, description="Systems per batch; default all in one")
    on_failure: Literal["stop", "continue"] = "stop"
    params: JsonObject = Field(default_factory=dict)

    @field_validator("action")
    @classmethod
    def _bulk_action(cls, value: str) -> str:
        if value == "clone":
            raise ValueError("clone runs on one system at a time (POST /systems/{id}/actions)")
        return value


class StepOut(BaseModel):
    name: str
    status: str
    depends_on: list[str]
    attempts: int
    max_attempts: int
    timeout_s: float
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    error: str | None
    result: dict[str, Any] | None


class JobOut(BaseModel):
    id: int
    action: str
    workflow: str
    status: str
    system_id: int | None
    parent_id: int | None
    params: dict[str, Any]
    context: dict[str, Any]
    error: str | None
    summary: dict[str, Any] | None
    cancel_requested: bool
    waiting_for_lock: bool
    request_id: str | None
    actor: str | None = Field(None, description="Who started it: a user name, or schedule:<name>")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: list[StepOut]


class ScheduleCreate(Input):
    name: Name
    cron: str = Field(..., max_length=127, description="Five-field cron expression, e.g. '0 3 * * *'")
    timezone: str = Field("UTC", max_length=63)
    job: JobSpec
    enabled: StrictBool = True


class ScheduleUpdate(Input):
    cron: str | None = Field(None, max_length=127)
    timezone: str | None = Field(None, max_length=63)
    job: JobSpec | None = None
    enabled: StrictBool | None = None


class ScheduleOut(BaseModel):
    id: int
    name: str
    cron: str
    timezone: str
    job: dict[str, Any]
    enabled: bool
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: int | None
    created_at: datetime


assert set(ACTIONS) == set(Action.__args__)  # one list of actions

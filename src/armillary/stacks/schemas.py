"""Pydantic shapes of the stack API. Templates come as a mapping (JSON) or as YAML text."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StrictBool, StringConstraints, model_validator

from armillary.domain.schemas import MAX_ID, Description, Input, JsonObject, Name, Output, Ref, json_int

TemplateText = Annotated[str, StringConstraints(min_length=1, max_length=2_000_000)]
TemplateIn = JsonObject | TemplateText
Parallelism = json_int(1, 100)
ROLLBACK = ("When the operation fails: let running resources finish, then go back to the last template "
            "(and parameters) that applied successfully; when none ever did, delete what the stack holds. "
            "The stack ends rolled_back or rollback_failed")
STATUSES = ("new, applying, complete, failed, checking, drifted, deleting, deleted, rolling_back, rolled_back "
            "(the operation failed and was undone), rollback_failed")


class StackCreate(Input):
    """Define a stack: nothing is made until a plan is applied (``POST /stacks/{ref}/apply``)."""

    name: Name
    description: Description = ""
    environment: Ref
    template: TemplateIn = Field(..., description="The template: a mapping, or YAML text")
    parameters: JsonObject = Field(default_factory=dict, description="Parameter values (hidden ones are secret)")
    parallelism: Parallelism = Field(10, description="Resources acted on at once within a dependency layer")


class StackAdopt(StackCreate):
    """Define a stack over things that already exist and apply it at once: each resource named in
    ``resources`` is adopted (its record points at what exists), the others are created."""

    resources: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)],
                    Annotated[str, StringConstraints(min_length=1, max_length=255)]] = Field(
        ..., max_length=10000,
        description="Resource name → what to adopt (a system's id or hostname, a profile's or cluster's name, "
                    "a reserved address); the abandon answer's physical ids fit")


class ValidateRequest(Input):
    template: TemplateIn
    parameters: JsonObject | None = Field(None, description="When given, checked against the template")


class PlanRequest(Input):
    """A plan of a new template and/or parameters (default: the stack's own)."""

    template: TemplateIn | None = None
    parameters: JsonObject | None = Field(None, description="Replaces the given values; others stay as stored")


class ApplyRequest(Input):
    """Apply plan ``plan`` (409 when the stack changed since it was made), or plan and apply in one call."""

    plan: json_int(1, MAX_ID) | None = Field(None, description="The number of a stored plan")
    template: TemplateIn | None = None
    parameters: JsonObject | None = None
    rollback: StrictBool = Field(False, description=ROLLBACK)

    @model_validator(mode="after")
    def _one_way(self) -> ApplyRequest:
        if self.plan is not None and (self.template is not None or self.parameters is not None):
            raise ValueError("give a plan's number, or a template and parameters, not both")
        return self


class EmptyRequest(Input):
    pass


class ConvergeRequest(Input):
    rollback: StrictBool = Field(False, description=ROLLBACK)


class StackOut(Output):
    id: int
    name: str
    description: str
    environment: dict[str, Any]
    status: str = Field(description=STATUSES)
    status_reason: str
    serial: int = Field(description="Grows with every change; a plan is applicable only at its serial")
    parallelism: int
    parameters: dict[str, Any] = Field(description="Parameter values; hidden ones are shown as '******'")
    outputs: dict[str, Any]
    drift: dict[str, Any]
    resources: int
    owner: str | None
    last_job_id: int | None
    running_job_id: int | None
    created_at: datetime
    updated_at: datetime


class ChangeOut(Output):
    resource: str
    type: str
    action: str
    layer: int
    fields: list[str] = Field(default_factory=list)
    property: str | None = None
    reason: str | None = None
    replace_policy: str | None = Field(None, description="replace only: delete_before_create (the default) or "
                                                         "create_before_delete (the new one is made first)")


class PlanOut(Output):
    number: int
    serial: int
    stale: bool = Field(description="The stack changed since: applying it is refused")
    summary: dict[str, int]
    changes: list[ChangeOut]
    outputs: dict[str, Any]
    created_by: str | None
    created_at: datetime
    applied_job_id: int | None


class ResourceOut(Output):
    name: str
    type: str
    physical_id: str | None
    status: str
    status_reason: str
    properties: dict[str, Any]
    attributes: dict[str, Any]
    drift: dict[str, Any]
    depends_on: list[str]
    deletion_policy: str
    job_id: int | None
    updated_at: datetime


class EventOut(Output):
    id: int
    resource: str | None
    action: str
    status: str
    message: str
    job_id: int | None
    created_at: datetime


class TemplateProblem(Output):
    path: str = Field(description="Where in the template: resources.web.properties.image")
    message: str


class ValidateOut(Output):
    valid: bool
    problems: list[TemplateProblem] = Field(description="Every problem found (empty when valid)")
    description: str | None = None
    parameters: list[str]
    hidden_parameters: list[str]
    resources: dict[str, str]
    outputs: list[str]

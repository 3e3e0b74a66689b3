"""Pydantic shapes of the audit API: checks, audits and runs, findings, remediations and runs, attention items."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool

from armillary.audits.models import CheckKind, RemediationKind, Severity
from armillary.audits.specs import check_spec_schemas, fix_spec_schemas
from armillary.domain.job_schemas import Selector
from armillary.domain.schemas import Description, Input, JsonObject, Name, Output, Ref, RefOut, json_int

Tag = Field(default_factory=list, max_length=50)


def _spec_per_kind(schemas: Callable[[], dict[str, dict[str, Any]]]) -> Callable[[dict[str, Any]], None]:
    """The ``spec`` a check or remediation takes depends on its ``kind``: one branch per kind in the
    document (a JSON schema of the model, made when the document is)."""

    def extra(schema: dict[str, Any]) -> None:
        branches = []
        for kind, spec in schemas().items():
            spec.pop("title", None)
            branch: dict[str, Any] = {"properties": {"kind": {"const": kind}, "spec": spec}}
            if spec.get("required") or spec.get("anyOf"):  # then {} (the default) is not a spec of this kind
                branch["required"] = ["spec"]
            branches.append(branch)
        schema["oneOf"] = branches

    return extra


# A count, or a percentage of the run's systems (``specs.check_max_failures``).
MaxFailures = json_int(0, 999_999) | Annotated[str, Field(pattern=r"^([0-9]{1,6}|([0-9]{1,2}|100)%)$")]


class CheckCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_spec_per_kind(check_spec_schemas))

    name: Name
    description: Description = ""
    kind: CheckKind
    spec: JsonObject = Field(default_factory=dict)
    severity: Severity = Severity.MEDIUM
    tags: list[Name] = Tag


class CheckUpdate(Input):
    name: Name | None = None
    description: Description | None = None
    spec: JsonObject | None = None
    severity: Severity | None = None
    tags: list[Name] | None = None


class CheckOut(Output):
    id: int
    name: str
    description: str
    kind: str
    spec: dict[str, Any]
    severity: str
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    version: int


class AuditCreate(Input):
    name: Name
    description: Description = ""
    selector: Selector = Field(..., description="Which systems: labels, environment, type, state, systems")
    checks: list[Ref] = Field(..., min_length=1, max_length=100, description="Check ids or names, in order")
    batch_size: json_int(1, 100_000) | None = None
    concurrency: json_int(1, 200) = 10


class AuditUpdate(Input):
    name: Name | None = None
    description: Description | None = None
    selector: Selector | None = None
    checks: list[Ref] | None = Field(None, min_length=1, max_length=100)
    batch_size: json_int(1, 100_000) | None = None
    concurrency: json_int(1, 200) | None = None


class AuditOut(Output):
    id: int
    name: str
    description: str
    selector: dict[str, Any]
    checks: list[RefOut]
    batch_size: int | None
    concurrency: int
    last_run: AuditRunOut | None = None
    created_at: datetime
    updated_at: datetime
    version: int


class AuditScheduleIn(Input):
    cron: str = Field(..., max_length=127, description="Five-field cron expression, e.g. '0 3 * * *'")
    timezone: str = Field("UTC", max_length=63)
    enabled: StrictBool = True


class AuditScheduleOut(Output):
    schedule: str = Field(..., description="Its row among the engine's schedules (GET /schedules/{name})")
    cron: str
    timezone: str
    enabled: bool
    next_run_at: datetime
    last_run_at: datetime | None
    last_job_id: int | None


class AuditRunOut(Output):
    id: int
    audit: RefOut
    job_id: int | None
    status: str
    actor: str | None
    systems: int
    counts: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None


class AuditRunStarted(Output):
    run: AuditRunOut
    job_id: int


class AuditSummary(Output):
    audit: RefOut
    run: AuditRunOut | None
    counts: dict[str, Any] = Field(default_factory=dict,
                                   description="total, pass, fail, error, pass_rate, new_failures, fixed")
    new_failures: list[FindingOut] = Field(default_factory=list, description="Failing now, not in the run before")
    fixed: list[FindingOut] = Field(default_factory=list, description="Passing now, failing in the run before")
    history: list[dict[str, Any]] = Field(default_factory=list, description="Pass rates of the recent runs")


class FindingOut(Output):
    id: int
    run_id: int | None
    remediation_run_id: int | None
    check: RefOut
    system: RefOut
    status: str
    change: str
    summary: str
    evidence: dict[str, Any]
    started_at: datetime
    duration_ms: int


class ComplianceOut(Output):
    system: RefOut
    compliant: bool
    checks: list[FindingOut]
    attention: list[AttentionOut]


class RemediationCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_spec_per_kind(fix_spec_schemas))

    name: Name
    description: Description = ""
    check: Ref
    kind: RemediationKind
    spec: JsonObject = Field(default_factory=dict)
    batch_size: json_int(1, 100_000) | None = None
    concurrency: json_int(1, 200) = 5
    max_failures: MaxFailures | None = Field(None, description="Failures tolerated: a count, or a percentage ('10%')")


class RemediationUpdate(Input):
    description: Description | None = None
    spec: JsonObject | None = None
    batch_size: json_int(1, 100_000) | None = None
    concurrency: json_int(1, 200) | None = None
    max_failures: MaxFailures | None = None


class RemediationOut(Output):
    id: int
    name: str
    description: str
    check: RefOut
    kind: str
    spec: dict[str, Any]
    batch_size: int | None
    concurrency: int
    max_failures: str | None
    created_at: datetime
    updated_at: datetime
    version: int


class RemediationRunRequest(Input):
    systems: list[Ref] | None = Field(None, max_length=100_000,
                                      description="Only these of the failing systems (default: all of them)")


class RemediationRunOut(Output):
    id: int
    remediation: RefOut
    job_id: int | None
    status: str
    systems: list[int]
    max_failures: int
    requested_by: str | None
    approved_by: str | None
    approved_at: datetime | None
    rejected_by: str | None
    reason: str | None
    results: dict[str, Any]
    created_at: datetime
    finished_at: datetime | None


class Decision(Input):
    reason: Description = ""


class AttentionEventOut(Output):
    id: int
    kind: str
    actor: str | None
    text: str
    at: datetime


class AttentionOut(Output):
    id: int
    system: RefOut
    check: RefOut | None
    remediation_run_id: int | None
    job_id: int | None
    reason: str
    status: str
    assignee: str | None
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    resolved_by: str | None
    resolved_at: datetime | None
    resolution: str | None
    created_at: datetime
    updated_at: datetime
    events: list[AttentionEventOut]


class Assignment(Input):
    assignee: Name | None = Field(..., description="A user name, or null to unassign")


class Comment(Input):
    text: str = Field(..., min_length=1, max_length=10_000)


class Resolution(Input):
    resolution: Description = Field(..., min_length=1, description="What was done")


AttentionFilter = Literal["open", "acknowledged", "resolved", "unresolved"]

AuditOut.model_rebuild()
AuditSummary.model_rebuild()
ComplianceOut.model_rebuild()

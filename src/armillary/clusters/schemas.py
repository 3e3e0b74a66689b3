"""Pydantic shapes of the cluster API: profiles, clusters, operations, policies, receivers."""

from __future__ import annotations

import string
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictBool, field_validator, model_validator

from armillary.clusters.capacity import HARD_MAX_SIZE
from armillary.domain.schemas import (
    Description,
    Input,
    JsonObject,
    Labels,
    MachineProps,
    Name,
    Output,
    Ref,
    Variables,
    inline_defs,
    json_int,
)

Size = json_int(0, HARD_MAX_SIZE)
Count = json_int(1, HARD_MAX_SIZE)
RefItem = dict[str, Any]


# ---------------------------------------------------------------- profiles


class ProfileCreate(Input):
    name: Name
    description: Description = ""
    environment: Ref
    hypervisor: Ref | None = Field(None, description="Where members run (a placement policy may spread them)")
    type: Ref | None = None
    machine: MachineProps = Field(default_factory=MachineProps)
    driver: JsonObject = Field(default_factory=dict, description="Driver properties, checked by the driver")
    labels: Labels = Field(default_factory=dict, max_length=100)
    variables: Variables = Field(default_factory=dict)

    @field_validator("machine")
    @classmethod
    def _no_addresses(cls, value: MachineProps) -> MachineProps:
        if value.addresses:
            raise ValueError("a profile cannot fix addresses: every member would get the same ones")
        return value


class ProfileUpdate(Input):
    """A change of what members are made of raises the profile's revision (existing members keep theirs)."""

    description: Description | None = None
    hypervisor: Ref | None = None
    type: Ref | None = None
    machine: MachineProps | None = None
    driver: JsonObject | None = None
    labels: Labels | None = Field(None, max_length=100)
    variables: Variables | None = None


class ProfileOut(Output):
    id: int
    name: str
    description: str
    environment: RefItem
    hypervisor: RefItem | None
    type: RefItem | None
    machine: dict[str, Any]
    driver: dict[str, Any]
    labels: dict[str, str]
    variables: dict[str, Any]
    revision: int
    clusters: list[str]
    created_at: datetime
    updated_at: datetime
    version: int


# ---------------------------------------------------------------- clusters


def _check_name_format(value: str) -> str:
    fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    if not fields <= {"cluster", "index"} or "index" not in fields:
        raise ValueError("may use {cluster} and must use {index} (e.g. '{cluster}-{index:03d}')")
    try:
        value.format(cluster="c", index=1)
    except (ValueError, KeyError, IndexError) as exc:
        raise ValueError(f"is not a valid format: {exc}") from None
    return value


class ClusterCreate(Input):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")] = Field(
        ..., description="Lower-case letters, digits and '-': it is part of every member's hostname")
    description: Description = ""
    profile: Ref
    desired: Size = 0
    min: Size = 0
    max: Size | None = Field(None, description="Unlimited when absent (the hard cap of 10,000 still holds)")
    name_format: Annotated[str, Field(max_length=100)] = "{cluster}-{index:03d}"
    concurrency: json_int(1, 500) = 10
    owner: Name | None = Field(None, description="Whose quota members take (default: the caller)")

    @field_validator("name_format")
    @classmethod
    def _format(cls, value: str) -> str:
        return _check_name_format(value)


class ClusterUpdate(Input):
    description: Description | None = None
    concurrency: json_int(1, 500) | None = None
    profile: Ref | None = Field(None, description="New members are made from it; existing ones are kept")


class ClusterOut(Output):
    id: int
    name: str
    description: str
    environment: RefItem
    profile: RefItem
    desired: int
    min: int
    max: int | None
    members: int
    active_members: int
    name_format: str
    concurrency: int
    status: str
    status_reason: str
    owner: str | None
    last_job_id: int | None
    running_job_id: int | None
    policies: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    version: int


class MemberOut(Output):
    system_id: int
    hostname: str
    index: int
    state: str
    hypervisor: str | None
    profile: str | None = Field(None, description="The profile the member was made from (none: adopted)")
    profile_revision: int
    joined_at: datetime
    failed_recoveries: int
    needs_attention: bool


# ---------------------------------------------------------------- operations

Operation = Literal["scale_out", "scale_in", "resize", "add_members", "remove_members", "replace_members",
                    "check", "recover", "update_profile"]
OPERATIONS: tuple[str, ...] = Operation.__args__  # type: ignore[attr-defined]


class ScaleRequest(Input):
    count: Count | None = Field(None, description="Members to add/remove (default: the scaling policy's "
                                "adjustment, else 1)")
    best_effort: StrictBool = Field(False, description="Clamp to min/max instead of refusing (422)")


def _given(field: str) -> dict[str, Any]:
    return {"required": [field], "properties": {field: {"not": {"type": "null"}}}}


class ResizeRequest(Input):
    # What _something refuses, stated in the OpenAPI document: number, min or max is given.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        _given("number"), _given("min"), _given("max")]})

    adjustment_type: Literal["exact", "change", "percent"] = "exact"
    number: Annotated[float, Field(ge=-HARD_MAX_SIZE * 100, le=HARD_MAX_SIZE * 100, strict=True)] | None = None
    min_step: json_int(0, HARD_MAX_SIZE) = 0
    min: Size | None = None
    max: Size | None = None
    strict: StrictBool = True

    @model_validator(mode="after")
    def _something(self) -> ResizeRequest:
        if self.number is None and self.min is None and self.max is None:
            raise ValueError("give number, min or max")
        return self


class MembersRequest(Input):
    systems: list[Ref] = Field(..., min_length=1, max_length=1000)
    destroy: StrictBool = Field(True, description="remove_members: destroy the machines (false: keep them as plain "
                          "systems)")


class RecoverRequest(Input):
    systems: list[Ref] | None = Field(None, max_length=1000, description="Default: every failed member")
    action: Literal["recreate", "reboot"] = Field(
        "recreate", description="recreate: destroy and create the machine again; reboot: stop and start the same "
        "machine (the driver's reboot when it has one)")


class UpdateProfileRequest(Input):
    """A rolling replacement of the members made from another profile or an older revision of it."""

    profile: Ref | None = Field(None, description="The profile to roll to (default: the cluster's own); another "
                                "profile becomes the cluster's profile")
    version: json_int(1, 2**31 - 1) | None = Field(
        None, description="The profile revision the caller expects: 409 if the profile has moved on since")
    max_batch_size: json_int(1, HARD_MAX_SIZE) = Field(1, description="Members replaced at once, at most")
    min_in_service: json_int(0, HARD_MAX_SIZE) = Field(
        0, description="Active members the rollout never goes below (a batch that would is stopped)")
    pause_seconds: json_int(0, 86400) = Field(0, description="Wait between two batches")


class EmptyRequest(Input):
    pass


# ---------------------------------------------------------------- policies


class ScalingSpec(Input):
    direction: Literal["out", "in"]
    adjustment_type: Literal["exact", "change", "percent"] = "change"
    number: Annotated[float, Field(ge=0, le=HARD_MAX_SIZE * 100, strict=True)] = 1
    min_step: json_int(0, HARD_MAX_SIZE) = 0
    best_effort: StrictBool = True
    cooldown: json_int(0, 86400 * 7) = 60


class DeletionSpec(Input):
    criteria: Literal["oldest_first", "youngest_first", "oldest_profile_first", "random"] = "youngest_first"
    destroy: StrictBool = True
    grace_period: json_int(0, 3600) = Field(
        0, description="Seconds between the decision and the destroy of the chosen members (to drain them)")


class PlacementTarget(Input):
    hypervisor: Ref
    weight: json_int(1, 1000) = 1


class PlacementSpec(Input):
    hypervisors: list[PlacementTarget] = Field(..., min_length=1, max_length=100)


class HealthProbe(Input):
    """A check of the member's service, beyond its machine's state: a TCP connect or an HTTP GET to the
    member's first address. It runs only on members whose machine is running."""

    kind: Literal["tcp", "http"]
    port: json_int(1, 65535)
    path: Annotated[str, Field(min_length=1, max_length=1024, pattern=r"^/")] = "/"
    timeout: Annotated[float, Field(gt=0, le=30, strict=True)] = Field(2.0, description="Seconds before the probe fails")


class HealthSpec(Input):
    interval: json_int(1, 86400) = Field(60, description="Seconds between polls")
    grace: json_int(0, 86400) = Field(
        60, description="Seconds a member must stay failed before it is recovered")
    probe: HealthProbe | None = Field(None, description="Optional TCP/HTTP check (an HTTP answer < 400 passes)")
    recovery: Literal["recreate", "reboot"] = Field(
        "recreate", description="How failed members are recovered (see the recover operation)")


POLICY_SPECS: dict[str, type[Input]] = {"scaling": ScalingSpec, "deletion": DeletionSpec,
                                        "placement": PlacementSpec, "health": HealthSpec}


def _spec_per_kind(schema: dict[str, Any]) -> None:
    """A policy's ``spec`` depends on its ``kind``: one branch per kind in the OpenAPI document."""
    branches = []
    for kind, model in POLICY_SPECS.items():
        spec = inline_defs(model.model_json_schema())
        spec.pop("title", None)
        branch: dict[str, Any] = {"properties": {"kind": {"const": kind}, "spec": spec}}
        if spec.get("required"):  # then {} (the default) is not a spec of this kind
            branch["required"] = ["spec"]
        branches.append(branch)
    schema["oneOf"] = branches


class PolicyCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_spec_per_kind)

    name: Name
    description: Description = ""
    kind: Literal["scaling", "deletion", "placement", "health"]
    spec: JsonObject = Field(default_factory=dict)


class PolicyUpdate(Input):
    description: Description | None = None
    spec: JsonObject | None = None


class PolicyOut(Output):
    id: int
    name: str
    description: str
    kind: str
    spec: dict[str, Any]
    clusters: list[str]
    created_at: datetime
    updated_at: datetime
    version: int


class AttachRequest(Input):
    policy: Ref
    enabled: StrictBool = True
    priority: json_int(0, 100) = 50


class BindingUpdate(Input):
    enabled: StrictBool | None = None
    priority: json_int(0, 100) | None = None


# ---------------------------------------------------------------- receivers

ReceiverOperation = Literal["scale_out", "scale_in", "resize", "check", "recover"]


# What a receiver's operation takes as its fixed ``params``: what a request to the operation takes.
RECEIVER_PARAMS: dict[str, type[Input]] = {"scale_out": ScaleRequest, "scale_in": ScaleRequest,
                                           "resize": ResizeRequest, "check": EmptyRequest,
                                           "recover": RecoverRequest}


def _params_per_operation(schema: dict[str, Any]) -> None:
    """``params`` depend on ``operation`` and ``on_resolve_params`` on ``on_resolve``: both stated."""

    def branches(operation: str, params: str) -> list[dict[str, Any]]:
        found = []
        for name, model in RECEIVER_PARAMS.items():
            spec = inline_defs(model.model_json_schema())
            spec.pop("title", None)
            found.append({"required": [operation], "properties": {operation: {"const": name}, params: spec}})
        return found

    schema["allOf"] = [{"anyOf": branches("operation", "params")},
                       {"anyOf": [*branches("on_resolve", "on_resolve_params"),
                                  {"not": {"required": ["on_resolve"]}},
                                  {"properties": {"on_resolve": {"type": "null"}}}]}]


class ReceiverCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_params_per_operation)

    name: Name
    cluster: Ref
    operation: ReceiverOperation
    params: JsonObject = Field(default_factory=dict, description="The operation's fixed parameters")
    on_resolve: ReceiverOperation | None = Field(None, description="Alertmanager 'resolved' notifications: "
                                                 "run this (default: nothing)")
    on_resolve_params: JsonObject = Field(default_factory=dict)
    rate_limit: json_int(1, 600) = Field(6, description="Calls per minute")


class ReceiverOut(Output):
    id: int
    name: str
    cluster: RefItem
    operation: str
    params: dict[str, Any]
    on_resolve: str | None
    on_resolve_params: dict[str, Any]
    rate_limit: int
    url: str
    last_triggered_at: datetime | None
    created_at: datetime
    version: int
    secret: str | None = Field(None, description="Shown once: when the receiver is made or its secret rotated")


# ---------------------------------------------------------------- schedules

ScheduleOperation = Literal["scale_out", "scale_in", "resize", "check", "recover", "update_profile"]

# What a scheduled operation takes as its fixed ``params``: what a request to the operation takes.
SCHEDULE_PARAMS: dict[str, type[Input]] = {**RECEIVER_PARAMS, "update_profile": UpdateProfileRequest}


def _schedule_params(schema: dict[str, Any]) -> None:
    """``params`` depend on ``operation``: one branch per operation in the OpenAPI document."""
    branches = []
    for name, model in SCHEDULE_PARAMS.items():
        spec = inline_defs(model.model_json_schema())
        spec.pop("title", None)
        branches.append({"required": ["operation"], "properties": {"operation": {"const": name}, "params": spec}})
    schema["anyOf"] = branches


class ClusterScheduleCreate(Input):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_schedule_params)

    name: Name
    cron: Annotated[str, Field(max_length=127)] = Field(..., description="Five-field cron expression, e.g. "
                                                        "'0 8 * * 1-5'")
    timezone: Annotated[str, Field(max_length=63)] = "UTC"
    operation: ScheduleOperation
    params: JsonObject = Field(default_factory=dict, description="The operation's fixed parameters, as a "
                               "request to it takes them (e.g. resize: {'number': 10})")
    enabled: StrictBool = True


class ClusterScheduleUpdate(Input):
    cron: Annotated[str, Field(max_length=127)] | None = None
    timezone: Annotated[str, Field(max_length=63)] | None = None
    params: JsonObject | None = Field(None, description="New fixed parameters of the same operation")
    enabled: StrictBool | None = None


class ClusterScheduleOut(Output):
    id: int
    name: str
    cluster: RefItem
    cron: str
    timezone: str
    operation: str
    params: dict[str, Any]
    enabled: bool
    next_run_at: datetime | None
    owner: str | None
    last_outcome: str | None = Field(None, description="started, skipped (busy or cooling down) or refused")
    last_reason: str
    last_at: datetime | None
    last_job_id: int | None
    created_at: datetime

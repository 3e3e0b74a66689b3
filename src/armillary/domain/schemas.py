"""Pydantic shapes of the inventory API: what clients send and what they get back.

Input models forbid unknown keys and bound every string, so bad input is refused at the edge
with the field named. Input also accepts the seed formats (the corpus/Craton YAML shapes), which
are translated to the canonical shape in ``mode="before"`` validators, see ``seed_shapes``.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from armillary.domain import seed_shapes
from armillary.domain.json_bounds import bounded, check_variables

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$"
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]
Description = Annotated[str, StringConstraints(max_length=1000)]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(max_length=255, pattern=r"^[^\x00-\x1f]*$")]
VariableKey = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]+$")]
# propertyNames, not pydantic's patternProperties (which lets any other key through, unlike the server).
Variables = Annotated[dict[VariableKey, Any], AfterValidator(check_variables), WithJsonSchema(
    {"type": "object", "title": "Variables",
     "propertyNames": {"minLength": 1, "maxLength": 255, "pattern": r"^[^\x00-\x1f]+$"}})]
# A free-form JSON object the API stores (driver properties, settings, specs, parameters): bounded.
JsonObject = Annotated[dict[str, Any], AfterValidator(bounded())]
class _KeysByPropertyNames:
    """A dict's document as ``propertyNames`` + ``additionalProperties`` instead of pydantic's
    ``patternProperties`` (which lets any other key through, unlike the server); size bounds kept."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema = handler(core_schema)
        patterns = schema.pop("patternProperties", None)
        if patterns:
            (pattern, values), = patterns.items()
            schema["propertyNames"] = {"pattern": pattern}
            schema["additionalProperties"] = values
        return schema


Labels = Annotated[dict[LabelKey, LabelValue], _KeysByPropertyNames()]

_HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def _check_hostname(value: str) -> str:
    if len(value) > 253 or not all(_HOSTNAME_LABEL.match(part) for part in value.split(".")):
        raise ValueError("must be a DNS hostname: labels of letters, digits and '-', each 1-63 long")
    if not value.rsplit(".", 1)[-1][:1].isalpha():
        # RFC 3696 §2: a top-level label is never all digits; it would also read as a system id. The
        # last label starts with a letter: a rule the OpenAPI document can state (HOSTNAME_PATTERN).
        raise ValueError("the last label must start with a letter (an all-digit one reads as an id or an IP address)")
    return value.lower()


def _ref(value: Any) -> Any:
    """References are ids or names; a string of ASCII digits is an id (names start with a letter)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


# What _check_hostname enforces, as the OpenAPI document states it: labels of letters, digits and '-'
# (1-63 long, no '-' at either end), the last one starting with a letter (never all digits).
HOSTNAME_PATTERN = (r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                    r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
Hostname = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=HOSTNAME_PATTERN),
                     AfterValidator(_check_hostname)]
# Ids are 32-bit on PostgreSQL; a larger number names nothing (422 on the field, never an overflow).
MAX_ID = 2**31 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Ref = Annotated[Id | Name, BeforeValidator(_ref)]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_FACTORS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def size_in(unit: str):
    """Accept an integer in ``unit`` or a string with a unit suffix ("4G", "512MiB")."""

    def parse(value: Any) -> Any:
        if isinstance(value, str):
            match = _SIZE.match(value)
            if not match:
                raise ValueError(f"not a size: {value!r} (use a number of {unit}, or e.g. '4G', '512M')")
            number, suffix = float(match.group(1)), (match.group(2) or unit[0]).upper()
            mib = number * _FACTORS[suffix]
            return int(round(mib / _FACTORS[unit[0]]))
        return value

    return parse


def _check_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def _json_int(value: Any) -> Any:
    """JSON's integers: 5 and 5.0, never true or "5" (lax pydantic would take both)."""
    if isinstance(value, (bool, str)):
        raise ValueError("Input should be a valid integer")
    return value


def json_int(ge: int, le: int) -> Any:
    """An integer field within [ge, le]: JSON's integers only (5 and 5.0, never true or "5", which lax
    pydantic takes). The bounds sit inside the validator so the OpenAPI schema states them (bounds given
    to ``Field`` next to a before-validator are lost from it)."""
    return Annotated[Annotated[int, Field(ge=ge, le=le)], BeforeValidator(_json_int)]
IpAddress = Annotated[str, AfterValidator(_check_address), WithJsonSchema(
    {"anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]})]


class Input(BaseModel):
    """Input refuses unknown keys and takes strings as sent: a value the OpenAPI schema forbids (a name
    longer than its limit, with a space around it) is refused, not trimmed into shape."""

    model_config = ConfigDict(extra="forbid")


class Output(BaseModel):
    model_config = ConfigDict(from_attributes=True)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: str | None = Field(None, description="URL of the next page, absent on the last page")


# ---------------------------------------------------------------- environments


class EnvironmentCreate(Input):
    name: Name
    description: Description = ""
    locked: StrictBool = False
    lock_reason: Description | None = None
    variables: Variables = Field(default_factory=dict)
    requires_approval: StrictBool = Field(False, description="Remediation runs here wait for an operator's approval")


class EnvironmentUpdate(Input):
    name: Name | None = None
    description: Description | None = None
    locked: StrictBool | None = None
    lock_reason: Description | None = None
    variables: Variables | None = None
    requires_approval: StrictBool | None = None


class LockRequest(Input):
    reason: Description = Field(..., min_length=1, description="Why: shown to everyone the lock refuses")


class RefOut(Output):
    id: int
    name: str


class EnvironmentOut(Output):
    id: int
    name: str
    description: str
    locked: bool
    lock_reason: str | None
    locked_by: str | None
    locked_at: datetime | None
    variables: dict[str, Any]
    requires_approval: bool = False
    created_at: datetime
    updated_at: datetime
    version: int


# ---------------------------------------------------------------- hypervisors


class HypervisorCreate(Input):
    name: Name
    environment: Ref
    driver: Name
    description: Description = ""
    config: JsonObject = Field(default_factory=dict)


class HypervisorUpdate(Input):
    name: Name | None = None
    description: Description | None = None
    config: JsonObject | None = Field(
        None,
        description="Settings to change, merged into the stored ones (secret or not); null removes a setting.",
    )


class HypervisorOut(Output):
    id: int
    name: str
    environment: RefOut
    driver: str
    description: str
    config: dict[str, Any] = Field(description="Non-secret settings; secret fields are never returned")
    secrets_set: list[str] = Field(description="Names of the secret fields that hold a value")
    created_at: datetime
    updated_at: datetime
    version: int


# ---------------------------------------------------------------- types

ProvisionerKind = Literal["none", "ansible", "puppet", "salt", "script"]


class ProvisionerSpec(Input):
    kind: ProvisionerKind = "none"
    spec: JsonObject = Field(default_factory=dict)


class TypeCreate(Input):
    name: Name
    description: Description = ""
    provisioner: ProvisionerSpec = Field(default_factory=ProvisionerSpec)
    variables: Variables = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_seed(cls, data: Any) -> Any:
        return seed_shapes.type_from_seed(data)


class TypeUpdate(Input):
    name: Name | None = None
    description: Description | None = None
    provisioner: ProvisionerSpec | None = None
    variables: Variables | None = None


class TypeOut(Output):
    id: int
    name: str
    description: str
    provisioner: ProvisionerSpec
    variables: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int


# ---------------------------------------------------------------- systems


class MachineProps(Input):
    user: Annotated[str, StringConstraints(max_length=63)] | None = None
    os: Annotated[str, StringConstraints(max_length=127)] | None = None
    cpu: json_int(ge=1, le=4096) | None = None
    memory: Annotated[Annotated[int, Field(ge=1, le=64 * 1024 * 1024)], BeforeValidator(size_in("MiB"))] | None = Field(
        None, description="MiB; strings with a unit are accepted ('4G', '512M')"
    )
    disk: Annotated[Annotated[int, Field(ge=1, le=1024 * 1024)], BeforeValidator(size_in("GiB"))] | None = Field(
        None, description="GiB; strings with a unit are accepted ('20G', '1T')"
    )
    addresses: list[IpAddress] = Field(default_factory=list, max_length=64)


class SystemCreate(Input):
    hostname: Hostname
    environment: Ref
    hypervisor: Ref | None = None
    driver_name: Name | None = Field(
        None,
        description="When `hypervisor` is absent: use the environment's only hypervisor of this driver "
        "(set by the seed shape, whose driver section names the driver)",
    )
    type: Ref | None = None
    machine: MachineProps = Field(default_factory=MachineProps)
    driver: JsonObject = Field(default_factory=dict, description="Driver properties, checked by the driver")
    labels: Labels = Field(default_factory=dict, max_length=100)
    variables: Variables = Field(default_factory=dict)
    owner: Name | None = Field(None, description="User the system belongs to (default: the caller; only "
                               "operators and admins may name another)")

    @model_validator(mode="before")
    @classmethod
    def _from_seed(cls, data: Any) -> Any:
        return seed_shapes.system_from_seed(data)


class SystemUpdate(Input):
    hostname: Hostname | None = None
    hypervisor: Ref | None = None
    type: Ref | None = None
    machine: MachineProps | None = Field(None, description="Replaces the machine properties that are given")
    driver: JsonObject | None = None
    labels: Labels | None = Field(None, max_length=100)
    variables: Variables | None = None
    owner: Name | None = Field(None, description="Give the system to another user (operators and admins)")


class SystemImport(Input):
    items: list[JsonObject] = Field(..., min_length=1, max_length=1000)


class SystemOut(Output):
    id: int
    hostname: str
    environment: RefOut
    hypervisor: RefOut | None
    driver_name: str | None
    type: RefOut | None
    machine: MachineProps
    driver: dict[str, Any]
    labels: dict[str, str]
    variables: dict[str, Any]
    state: str
    owner: str | None = None
    created_at: datetime
    updated_at: datetime
    version: int


class ImportResult(BaseModel):
    created: int
    ids: list[int]


# ---------------------------------------------------------------- groups and variables


class GroupCreate(Input):
    name: Name
    description: Description = ""
    selector: Labels = Field(..., min_length=1, description="Labels a system must all carry to be a member")
    priority: json_int(ge=-1000, le=1000) = Field(0, description="Higher wins when two groups set one key")
    variables: Variables = Field(default_factory=dict)


class GroupUpdate(Input):
    name: Name | None = None
    description: Description | None = None
    selector: Labels | None = Field(None, min_length=1)
    priority: json_int(ge=-1000, le=1000) | None = Field(None)
    variables: Variables | None = None


class GroupOut(Output):
    id: int
    name: str
    description: str
    selector: dict[str, str]
    priority: int
    variables: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int


class VariableSource(BaseModel):
    level: Literal["global", "environment", "group", "type", "facts", "system"]
    name: str | None = Field(None, description="Which environment, group or type; for facts, which audit")


class ResolvedVariable(BaseModel):
    value: Any
    source: VariableSource
    overrides: list[VariableSource] = Field(
        default_factory=list, description="Lower-precedence sources that also set this key"
    )


class ResolvedVariables(BaseModel):
    system_id: int
    precedence: list[str]
    variables: dict[str, ResolvedVariable]


class LabelCount(BaseModel):
    key: str
    value: str
    systems: int


def inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` written in place: an OpenAPI document has no room for a body's own
    ``$defs`` (for per-kind ``spec`` schemas built from models; not for recursive models)."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk({**defs[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}})
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(schema)

"""What each kind of check and remediation takes (their ``spec``), checked when they are saved.

Checks:

``command``
    ``{"command": ["grep", "-qx", "port=80", "/etc/app.conf"], "expect_exit": 0, "expect_pattern": "...",
    "fail_pattern": "...", "timeout": 60, "env": {...}}`` — run through the system's transport (an argv list;
    a string is run by ``/bin/sh -c``) with the system's resolved variables as environment (the script
    provisioner's conversion). It passes when the exit status is ``expect_exit`` (a list: any of them), the
    output matches ``expect_pattern`` (a regular expression, searched) if given, and does not match
    ``fail_pattern`` if given. The output kept as evidence (and matched) is its tail: the last 40 lines.
``ansible``
    an ``ansible`` provisioner spec (playbook and/or roles) run in **check mode** with ``--diff``: every task
    that would change something is drift (the finding fails, listing each changed task).
``facts``
    ``{"gather": ["os", "kernel", "packages", "ports", "disk"], "expect": ["facts.os.version ==
    vars.os_version", "facts.disk['/'].used_pct < 90", "22 in facts.ports"]}`` — facts read from the machine,
    then each expression evaluated by Jinja2's sandboxed expression engine over ``facts``, ``vars`` (the
    system's resolved variables) and ``system`` (hostname, os, cpu, memory_mb, environment); no Python is
    evaluated. It passes when every expression is true.
``machine_drift``
    ``{"compare": ["state", "cpu", "memory", "image", "address"]}`` (default: all) — the driver's view of the
    machine against the inventory: missing, stopped, and cpu/memory/image/addresses where the driver
    reports them.

Remediations: ``script`` (``{"script": "...", "interpreter": ["/bin/sh", "-e"], "timeout": 300}``, run through
the transport with the resolved variables as environment), ``ansible`` (an ansible provisioner spec, applied
for real) and ``action`` (``{"action": "reload" | "provision" | "start" | "recover", "params": {...}}``: a
lifecycle job on the system; ``recover`` is ``start`` for a stopped machine and ``reload`` otherwise).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

from armillary.audits.models import CheckKind, RemediationKind
from armillary.domain.errors import InvalidInput, invalid_from_pydantic
from armillary.domain.schemas import inline_defs
from armillary.failures import PermanentFailure

FACT_GROUPS = ("os", "kernel", "packages", "ports", "disk")
DRIFT_FIELDS = ("state", "cpu", "memory", "image", "address")
MAX_EXPRESSION = 1000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
    return value


Word = Annotated[str, Field(min_length=1, pattern=r"^[^\x00]+$")]
Line = Annotated[str, Field(min_length=1, pattern=r"\S")]
Regex = Annotated[str, Field(max_length=1000, json_schema_extra={"format": "regex"})]


class CommandSpec(Strict):
    command: Annotated[list[Word], Field(min_length=1)] | Line = Field(
        ..., description="argv list, or a shell line run by /bin/sh -c")
    expect_exit: StrictInt | list[StrictInt] = 0
    expect_pattern: Regex | None = None
    fail_pattern: Regex | None = None
    timeout: float = Field(60, gt=0, le=3600, strict=True)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("command")
    @classmethod
    def _words(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and (not value or not all(value) or any("\x00" in w for w in value)):
            raise ValueError("must be a non-empty list of non-empty words")
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("expect_pattern", "fail_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        return _regex(value)

    def argv(self) -> list[str]:
        return ["/bin/sh", "-c", self.command] if isinstance(self.command, str) else list(self.command)

    def exits(self) -> list[int]:
        return self.expect_exit if isinstance(self.expect_exit, list) else [self.expect_exit]


class FactsSpec(Strict):
    gather: list[Literal["os", "kernel", "packages", "ports", "disk"]] = Field(default_factory=lambda: ["os", "kernel"])
    expect: list[str] = Field(..., min_length=1, max_length=100)
    timeout: float = Field(60, gt=0, le=3600, strict=True)
    write_back: StrictBool = Field(False, description="Keep the facts (all but packages) as variables facts.<key>")

    @field_validator("expect")
    @classmethod
    def _expressions(cls, value: list[str]) -> list[str]:
        for expression in value:
            if len(expression) > MAX_EXPRESSION:
                raise ValueError(f"an expression is longer than {MAX_EXPRESSION} characters")
            compile_expression(expression)  # a syntax error is refused when the check is saved
        return value


class DriftSpec(Strict):
    compare: list[Literal["state", "cpu", "memory", "image", "address"]] = Field(
        default_factory=lambda: list(DRIFT_FIELDS))


class ScriptFix(Strict):
    script: str = Field(..., min_length=1, max_length=1_000_000)
    interpreter: list[str] = Field(default_factory=lambda: ["/bin/sh", "-e"], min_length=1)
    timeout: float = Field(300, gt=0, le=86400, strict=True)


class ActionFix(Strict):
    action: Literal["reload", "provision", "start", "recover"]
    params: dict[str, Any] = Field(default_factory=dict)


@lru_cache(maxsize=1)
def _jinja():
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    return ImmutableSandboxedEnvironment(undefined=StrictUndefined)


@lru_cache(maxsize=512)
def compile_expression(expression: str) -> Any:
    """A sandboxed Jinja2 expression (no statements, no Python); ``ValueError`` naming the syntax error."""
    from jinja2 import TemplateSyntaxError

    try:
        return _jinja().compile_expression(expression, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise ValueError(f"{expression!r}: {exc.message}") from None


def _ansible_spec(spec: dict[str, Any], field: str, *, check: bool) -> dict[str, Any]:
    from armillary.provisioners.base import provisioners

    installed = provisioners()
    if "ansible" not in installed:
        raise InvalidInput(field, "the ansible provisioner is not installed (pip install 'armillary[ansible]')")
    try:
        parsed = installed["ansible"].validate_spec({**spec, "check": check, "diff": True} if check else spec)
    except PermanentFailure as exc:
        raise InvalidInput(field, str(exc)) from None
    return parsed.model_dump(mode="json", exclude_none=True)


def validate_check_spec(kind: str, spec: dict[str, Any], field: str = "spec") -> dict[str, Any]:
    """The spec of a check of ``kind``, normalized; 422 naming the bad field."""
    models: dict[str, type[BaseModel]] = {CheckKind.COMMAND: CommandSpec, CheckKind.FACTS: FactsSpec,
                                          CheckKind.MACHINE_DRIFT: DriftSpec}
    if kind == CheckKind.ANSIBLE:
        return _ansible_spec(spec, field, check=True)
    try:
        return models[kind].model_validate(spec).model_dump(mode="json")
    except ValidationError as exc:
        raise invalid_from_pydantic(field, exc) from None


def check_spec_schemas() -> dict[str, dict[str, Any]]:
    """The JSON schema of a check's ``spec`` per kind, for the OpenAPI document (``CheckCreate``): what
    ``validate_check_spec`` takes, stated (only a regex's and a Jinja2 expression's syntax are not)."""
    return _spec_schemas({CheckKind.COMMAND: CommandSpec, CheckKind.FACTS: FactsSpec,
                          CheckKind.MACHINE_DRIFT: DriftSpec}, CheckKind.ANSIBLE)


def fix_spec_schemas() -> dict[str, dict[str, Any]]:
    """The same for a remediation's ``spec`` (``RemediationCreate``)."""
    return _spec_schemas({RemediationKind.SCRIPT: ScriptFix, RemediationKind.ACTION: ActionFix},
                         RemediationKind.ANSIBLE)


def _spec_schemas(models: dict[str, type[BaseModel]], ansible_kind: str) -> dict[str, dict[str, Any]]:
    from armillary.provisioners.base import provisioners

    installed = provisioners()
    if "ansible" in installed:
        models = {**models, ansible_kind: installed["ansible"].Spec}
    schemas = {kind: inline_defs(model.model_json_schema()) for kind, model in models.items()}
    if ansible_kind in schemas:  # AnsibleSpec._something: a playbook, roles, or both
        schemas[ansible_kind]["anyOf"] = [
            {"required": ["playbook"], "properties": {"playbook": {"not": {"type": "null"}}}},
            {"required": ["roles"], "properties": {"roles": {"minItems": 1}}}]
    return schemas


def validate_fix_spec(kind: str, spec: dict[str, Any], field: str = "spec") -> dict[str, Any]:
    if kind == RemediationKind.ANSIBLE:
        return _ansible_spec(spec, field, check=False)
    model = ScriptFix if kind == RemediationKind.SCRIPT else ActionFix
    try:
        return model.model_validate(spec).model_dump(mode="json")
    except ValidationError as exc:
        raise invalid_from_pydantic(field, exc) from None


_MAX_FAILURES = re.compile(r"^(\d{1,6})(%?)$")


def check_max_failures(value: str | int | None) -> str | None:
    """``3`` or ``"10%"`` (of the systems of the run); None: no limit."""
    if value is None:
        return None
    match = _MAX_FAILURES.match(str(value).strip())
    if not match or (match.group(2) and int(match.group(1)) > 100):
        raise InvalidInput("max_failures", f"{value!r} is not a count or a percentage (e.g. 3 or '10%')")
    return match.group(0)


def max_failures_of(value: str | None, systems: int) -> int:
    """The absolute number of failures a run over ``systems`` tolerates (the next one stops it)."""
    if value is None:
        return systems
    if value.endswith("%"):
        return int(systems * int(value[:-1]) / 100)
    return int(value)

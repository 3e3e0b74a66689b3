"""The project's deploy configuration: its model, where it comes from, and checking a request early.

See ``armillary.workflows.deploy`` for the keys and their meaning.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from armillary.engine.workflows import check_acyclic
from armillary.sources import Source, relative_path

CONFIG_VARIABLE = "deploy"
SOURCES_DIR_ENV = "ARMILLARY_DEPLOY_SOURCES_DIR"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
_MODE = r"^0?[0-7]{3,4}$"
_ACCOUNT = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hooks(_Strict):
    pre_archive: str | None = Field(None, max_length=65536)
    post_archive: str | None = Field(None, max_length=65536)
    rollback: str | None = Field(None, max_length=65536)


class Perms(_Strict):
    owner: str | None = Field(None, pattern=_ACCOUNT)
    group: str | None = Field(None, pattern=_ACCOUNT)
    dir_mode: str | None = Field(None, pattern=_MODE)
    file_mode: str | None = Field(None, pattern=_MODE)
    modes: dict[str, str] = Field(default_factory=dict, description="Release-relative path → mode")

    @field_validator("modes")
    @classmethod
    def _modes(cls, value: dict[str, str]) -> dict[str, str]:
        for path, mode in value.items():
            relative_path(path)
            if not re.match(_MODE, mode):
                raise ValueError(f"{path}: mode {mode!r} is not octal (e.g. 0750)")
        return value


class Task(_Strict):
    name: str = Field(..., pattern=_NAME)
    run: str = Field(..., min_length=1, max_length=65536, description="Shell text (/bin/sh -e -c)")
    depends_on: list[str] = Field(default_factory=list, max_length=100)


class Install(_Strict):
    playbook: str | None = Field(None, min_length=1, max_length=1024,
                                 description="An Ansible playbook of the release (path relative to it)")
    extra_vars: dict[str, Any] = Field(default_factory=dict, description="Extra vars of the playbook")

    @field_validator("playbook")
    @classmethod
    def _in_release(cls, value: str | None) -> str | None:
        return None if value is None else relative_path(value)


class DeployConfig(_Strict):
    project: str = Field(..., pattern=_NAME)
    root: str = Field(..., min_length=2, max_length=1024)
    source: Source | None = None
    keep: int = Field(5, ge=1, le=1000)
    shared: list[str] = Field(default_factory=list, max_length=100)
    hooks: Hooks = Field(default_factory=Hooks)
    perms: Perms = Field(default_factory=Perms)
    health_check: str | None = Field(None, max_length=65536)
    tasks: list[Task] = Field(default_factory=list, max_length=200)
    install: Install = Field(default_factory=Install)
    env: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(None, gt=0, le=86400)

    @field_validator("root")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not value.startswith("/") or "\x00" in value or value.rstrip("/") == "":
            raise ValueError("must be an absolute path on the machine (not /)")
        return value.rstrip("/")

    @field_validator("shared")
    @classmethod
    def _shared(cls, value: list[str]) -> list[str]:
        return [relative_path(item).strip("/") for item in value]

    @model_validator(mode="after")
    def _graph(self) -> DeployConfig:
        names = [task.name for task in self.tasks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"task names must be unique: {', '.join(duplicates)}")
        for task in self.tasks:
            unknown = sorted(set(task.depends_on) - set(names))
            if unknown:
                raise ValueError(f"task {task.name} depends on unknown task(s) {', '.join(unknown)}")
        check_acyclic({task.name: list(task.depends_on) for task in self.tasks})  # CycleError is a ValueError
        return self

    @property
    def project_dir(self) -> str:
        return f"{self.root}/{self.project}"


PARAM_KEYS = tuple(DeployConfig.model_fields)


class ConfigError(ValueError):
    """The deploy configuration is missing or invalid; ``field`` says where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def merged_config(variables: dict[str, Any], params: dict[str, Any]) -> dict[str, Any] | None:
    """The variable ``deploy`` with the action params of the same names over it; None when neither has any."""
    base = variables.get(CONFIG_VARIABLE)
    if base is not None and not isinstance(base, dict):
        raise ConfigError(f"variables.{CONFIG_VARIABLE}", "must be a mapping")
    given = {key: params[key] for key in PARAM_KEYS if key in params}
    if base is None and not given:
        return None
    return {**(base or {}), **given}


def parse_config(raw: dict[str, Any]) -> DeployConfig:
    try:
        return DeployConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "deploy"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'deploy'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(field, f"invalid deploy configuration: {problems}") from None


def check_request(session: Any, system: Any, action: str, params: dict[str, Any]) -> None:
    """Validate a deploy or rollback request before its job exists (``ConfigError``: a 422).

    Refuses an invalid configuration and a cyclic task graph (naming the cycle), so nothing runs.
    """
    from armillary.domain.variables import plain_values, resolve_system

    if action == "rollback" and "release" in params:
        release_id(params["release"])
    if action not in {"deploy", "rollback"}:
        return
    if action == "deploy" and params.get("release") is not None:
        release_id(params["release"])
    raw = merged_config(plain_values(resolve_system(session, system)), params)
    if raw is not None:
        parse_config(raw)


def release_id(value: Any) -> str:
    if not isinstance(value, str) or not re.match(_NAME, value):
        raise ConfigError("params.release", "a release id is 1-100 letters, digits, '.', '_' or '-', "
                                            "starting with a letter or digit")
    return value


"""The driver interface: how Armillary talks to one kind of hypervisor.

A driver is a class registered under the ``armillary.drivers`` entry point group. It declares
``Config`` (the hypervisor's connection settings; fields marked ``secret`` are write-only and
stored encrypted) and ``SystemProps`` (per-system properties, validated when a system is saved).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


def secret(description: str, **kwargs: Any) -> Any:
    """A config field that is write-only in the API and encrypted at rest."""
    return Field(
        default=kwargs.pop("default", None),
        description=description,
        json_schema_extra={"secret": True, "writeOnly": True},
        **kwargs,
    )


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class FreeFormProps(BaseModel):
    """Per-system properties of a driver that does not validate them (yet)."""

    model_config = ConfigDict(extra="allow")


class Driver:
    """Base class of every driver; subclasses set ``name``, ``Config`` and ``SystemProps``."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    Config: ClassVar[type[BaseModel]] = StrictModel
    SystemProps: ClassVar[type[BaseModel]] = FreeFormProps

    @classmethod
    def secret_fields(cls) -> set[str]:
        return {
            name
            for name, field in cls.Config.model_fields.items()
            if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("secret")
        }

    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "summary": cls.summary,
            "config_schema": cls.Config.model_json_schema(),
            "system_schema": cls.SystemProps.model_json_schema(),
            "secret_fields": sorted(cls.secret_fields()),
        }

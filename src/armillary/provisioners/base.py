"""The provisioner interface: configuration tools (Ansible, Puppet, Salt, scripts) behind one seam.

A provisioner is registered under the ``armillary.provisioners`` entry point group with the name a
type's ``provisioner.kind`` uses. It gets the step context (for live log lines), the system, the
type's spec and the system's resolved variables, and returns counts (changed/ok/failed) that go
into the job's context.

Before ``run``, the engine registers the values of the variables whose keys look secret
(``db_password``, ``api_token``... see ``armillary.redaction.is_secret_key``) with
``armillary.redaction``: whatever a run prints goes to the job log through ``ctx.log``, which masks
them (and every hypervisor secret) as ``***``. A provisioner needs to do nothing for that; one that
writes elsewhere (its own log records) is covered by the redacting log handler.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError

from armillary.engine.errors import PermanentStepError

ENTRY_POINT_GROUP = "armillary.provisioners"
log = logging.getLogger("armillary.provisioners")


class Provisioner:
    name: ClassVar[str]
    # The pydantic model of this provisioner's spec (the ``spec`` of a type's ``provisioner``).
    Spec: ClassVar[type[BaseModel]]

    @classmethod
    def validate_spec(cls, spec: dict[str, Any]) -> Any:
        """The spec parsed as ``Spec``, or ``PermanentStepError`` naming each bad field.

        Called when a type is saved (the API answers 422) and again by ``run``, which gets it typed.
        """
        try:
            return cls.Spec.model_validate(spec or {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in exc.errors()
            )
            raise PermanentStepError(f"invalid {cls.name} provisioner spec: {problems}") from None

    def run(self, ctx: Any, system: Any, spec: dict[str, Any], variables: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError


@cache
def provisioners() -> dict[str, type[Provisioner]]:
    """Installed provisioners by name. One that fails to load is left out with a warning: a broken
    plugin must not take the server down, and a type using it then fails with "not installed"."""
    found: dict[str, type[Provisioner]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found[ep.name] = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plugin
            log.warning("provisioner %s could not be loaded: %s", ep.name, exc)
    return found

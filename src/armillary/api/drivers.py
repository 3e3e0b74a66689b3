"""/api/v1/drivers: the installed drivers and the JSON schemas of their settings.

The list ends with the plugins that are registered but failed to load — drivers, transports and
provisioners alike, as ``armillary.plugins.Registry.broken()`` reports them: one entry each,
``{"name", "kind": "driver" | "transport" | "provisioner", "broken": true, "reason"}``, so an operator
sees why a driver or provisioner is missing. Entries of loaded drivers are ``Driver.describe()``, as
ever (they have no ``broken`` key); a client listing drivers to use skips the entries marked broken.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from armillary.api.lookups import driver_for
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import InvalidInput, NotFound
from armillary.drivers.registry import broken_drivers, drivers
from armillary.provisioners.base import PROVISIONERS
from armillary.remote.base import broken_transports

router = APIRouter(prefix="/drivers", tags=["drivers"])


@router.get("", response_model=list[dict[str, Any]])
def list_drivers(access: Access = requires(Permission.AUTHENTICATED)) -> list[dict[str, Any]]:
    return [cls.describe() for cls in drivers().values()] + broken_plugins()


def broken_plugins() -> list[dict[str, Any]]:
    """Every plugin registered but not loaded (drivers, transports, provisioners), with why."""
    found = {"driver": broken_drivers(), "transport": broken_transports(),
             "provisioner": PROVISIONERS.broken()}
    return [{"name": name, "kind": kind, "broken": True, "reason": reason}
            for kind, broken in found.items() for name, reason in sorted(broken.items())]


@router.get("/{name}", response_model=dict[str, Any])
def get_driver(name: str, access: Access = requires(Permission.AUTHENTICATED)) -> dict[str, Any]:
    """A driver's settings, properties and capabilities; a driver that is not installed is a 404 (a path
    names a resource: there is none by that name)."""
    try:
        return driver_for(name, field="name").describe()
    except InvalidInput as exc:
        raise NotFound(exc.errors[0]["message"] if exc.errors else exc.detail) from None

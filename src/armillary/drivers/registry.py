"""Finding drivers: every class registered in the ``armillary.drivers`` entry point group.

Built-in drivers are registered by Armillary's own pyproject.toml exactly as a third-party
package would register its own, so there is one way in. The loading is ``armillary.plugins.Registry``'s:
a driver that fails to load is left out and logged, and ``REGISTRY.broken()`` says why.
"""

from __future__ import annotations

from armillary.drivers.base import Driver
from armillary.plugins import Registry, UnknownPlugin

ENTRY_POINT_GROUP = "armillary.drivers"

REGISTRY: Registry[Driver] = Registry("driver", ENTRY_POINT_GROUP, Driver)


class UnknownDriver(UnknownPlugin):
    """No installed driver has that name (the message lists the installed ones, and why it is broken)."""

    def __init__(self, name: str, known: list[str], broken: dict[str, str] | None = None) -> None:
        super().__init__("driver", name, known, broken)


def drivers() -> dict[str, type[Driver]]:
    """All installed drivers by name (loaded once per process); broken ones are left out."""
    return REGISTRY.all()


def broken_drivers() -> dict[str, str]:
    """Drivers that are registered but failed to load, with why."""
    return REGISTRY.broken()


def get_driver(name: str) -> type[Driver]:
    try:
        return REGISTRY.get(name)
    except UnknownPlugin:
        raise UnknownDriver(name, list(REGISTRY.all()), REGISTRY.broken()) from None

"""Finding drivers: every class registered in the ``armillary.drivers`` entry point group.

Built-in drivers are registered by Armillary's own pyproject.toml exactly as a third-party
package would register its own, so there is one way in.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from armillary.drivers.base import Driver

ENTRY_POINT_GROUP = "armillary.drivers"


class UnknownDriver(LookupError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown driver {name!r}; installed drivers: {', '.join(known) or 'none'}")
        self.name = name
        self.known = known


@cache
def drivers() -> dict[str, type[Driver]]:
    """All installed drivers by name (loaded once per process)."""
    found: dict[str, type[Driver]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        found[getattr(cls, "name", ep.name)] = cls
    return dict(sorted(found.items()))


def get_driver(name: str) -> type[Driver]:
    try:
        return drivers()[name]
    except KeyError:
        raise UnknownDriver(name, list(drivers())) from None

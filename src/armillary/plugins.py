"""One plugin registry for every kind of plugin: drivers, provisioners, transports, workflows...

A kind of plugin is an entry-point group plus the base class its plugins subclass. Armillary's own
plugins are registered in its pyproject.toml exactly as a third party registers theirs, so there is
one way in. One policy for a plugin that fails to load (its package is broken, an extra is missing,
it is not a subclass of the base): it is skipped and logged, and ``broken()`` reports it with the
reason, for ``GET /api/v1/drivers`` and ``armillary doctor``. A broken plugin never takes the server
down; whatever names it then fails with "unknown ... (installed: ...)" and the reason is on record.
"""

from __future__ import annotations

import logging
import threading
from importlib.metadata import entry_points
from typing import Generic, TypeVar

log = logging.getLogger("armillary.plugins")
P = TypeVar("P")


class UnknownPlugin(LookupError):
    """No installed plugin of that kind has that name; says which ones are installed (and broken)."""

    def __init__(self, kind: str, name: str, known: list[str], broken: dict[str, str] | None = None) -> None:
        message = f"unknown {kind} {name!r}; installed {kind}s: {', '.join(known) or 'none'}"
        if broken and name in broken:
            message += f" ({name} is installed but failed to load: {broken[name]})"
        super().__init__(message)
        self.kind, self.name, self.known = kind, name, known


class Registry(Generic[P]):
    """The plugins of one entry-point group, loaded once, by name (sorted).

    A plugin is a subclass of ``base`` (drivers, provisioners, transports) or an instance of it
    (workflows, which are data: graphs of steps). An entry point may also name a list or tuple of
    them: one package providing several plugins, each under its own ``name``."""

    def __init__(self, kind: str, group: str, base: type[P]) -> None:
        self.kind, self.group, self.base = kind, group, base
        self._loaded: dict[str, type[P]] | None = None
        self._broken: dict[str, str] = {}
        self._lock = threading.Lock()

    def all(self) -> dict[str, type[P]]:
        """Every plugin that loaded, by name."""
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = self._load()
        return self._loaded

    def get(self, name: str) -> type[P]:
        try:
            return self.all()[name]
        except KeyError:
            raise UnknownPlugin(self.kind, name, list(self.all()), self._broken) from None

    def broken(self) -> dict[str, str]:
        """Plugins that are registered but failed to load, with why."""
        self.all()
        return dict(self._broken)

    def add(self, name: str, plugin: type[P]) -> None:
        """Register a plugin by hand (tests, or a plugin made at run time)."""
        self.all()[name] = plugin

    def _load(self) -> dict[str, type[P]]:
        found: dict[str, type[P]] = {}
        for ep in entry_points(group=self.group):
            try:
                loaded = ep.load()
                several = isinstance(loaded, (list, tuple))
                plugins = list(loaded) if several else [loaded]
                for plugin in plugins:
                    if not (isinstance(plugin, type) and issubclass(plugin, self.base)) and not isinstance(plugin, self.base):
                        raise TypeError(f"{ep.value} is neither a {self.base.__name__} nor a subclass of it"
                                        + (" (nor a list of them)" if several else ""))
                    if several and not getattr(plugin, "name", None):
                        raise TypeError(f"{ep.value}: a plugin in a list needs its own name")
            except Exception as exc:  # noqa: BLE001 - any failure of a plugin to import
                self._broken[ep.name] = f"{type(exc).__name__}: {exc}"
                log.warning("%s plugin %s could not be loaded: %s", self.kind, ep.name, exc)
                continue
            for plugin in plugins:
                found[getattr(plugin, "name", None) or ep.name] = plugin
        return dict(sorted(found.items()))

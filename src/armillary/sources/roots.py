"""The control host's directories content may be taken from, and the one rule for paths under them.

Each directory is a server setting (``config.Settings``: ``scripts_dir``, ``playbooks_dir``,
``puppet_modules_dir``, ``salt_states_dir``, ``deploy_sources_dir``; uploads live in
``<data_dir>/sources``). A path an API caller gives is relative to one of them and never leaves it:
``..`` is refused when a spec is saved, and here the path is resolved (symbolic links followed) and
must still lie inside the directory. Without the setting, paths are refused, saying which setting
is missing. The checks are made when a job runs, on the control host, before anything is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from armillary.failures import PermanentFailure

if TYPE_CHECKING:
    from armillary.config import Settings

RootKind = Literal["scripts", "playbooks", "puppet_modules", "salt_states", "deploy_sources"]
Kind = Literal["file", "directory", "file or directory"]
UPLOADS_SUBDIR = "sources"

# kind -> (the setting's environment variable, how errors name the directory, how "outside ..." says it)
_NAMES: dict[str, tuple[str, str, str]] = {
    "scripts": ("ARMILLARY_SCRIPTS_DIR", "scripts directory", ""),
    "playbooks": ("ARMILLARY_PLAYBOOKS_DIR", "playbooks directory", ""),
    "puppet_modules": ("ARMILLARY_PUPPET_MODULES_DIR", "modules directory", ""),
    "salt_states": (
        "ARMILLARY_SALT_STATES_DIR",
        "salt states directory",
        "the ARMILLARY_SALT_STATES_DIR directory",
    ),
    "deploy_sources": ("ARMILLARY_DEPLOY_SOURCES_DIR", "deploy sources directory", ""),
}


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit} bytes"


@dataclass(frozen=True)
class Root:
    """One directory of the control host (``path``; ``None``: not configured) and how errors name it.

    ``setting`` is the environment variable that sets it (named when it is missing), ``name`` what it is
    ("scripts directory"), ``where`` how "... is outside <where>" says it (default: ``the <name>
    (<setting>)``)."""

    path: Path | None
    setting: str = ""
    name: str = "directory"
    where: str = ""

    def __post_init__(self) -> None:
        if not self.where:
            suffix = f" ({self.setting})" if self.setting else ""
            object.__setattr__(self, "where", f"the {self.name}{suffix}")

    def require(self, label: str, relative: str) -> Path:
        """The directory, resolved; ``PermanentFailure`` when the server has none."""
        if self.path is None:
            raise PermanentFailure(
                f"{label}: {relative} is a path on the server, but the server has no {self.name}"
                + (f" (set {self.setting})" if self.setting else "")
            )
        return Path(self.path).resolve()

    def contains(self, path: Path) -> bool:
        """Whether ``path`` (resolved, links followed) lies inside this directory (``False`` if none)."""
        return self.path is not None and Path(path).resolve().is_relative_to(Path(self.path).resolve())

    def locate(self, relative: str, *, label: str, kind: Kind = "file or directory") -> Path:
        """``relative`` under this directory, links resolved: refused when it leaves the directory or is
        not there (as a ``kind``). ``label`` starts every message (``script 'site'``, ``salt states``)."""
        base = self.require(label, relative)
        candidate = (base / relative).resolve()
        if not candidate.is_relative_to(base):
            raise PermanentFailure(f"{label}: {relative} is outside {self.where}")
        found = {
            "file": candidate.is_file,
            "directory": candidate.is_dir,
            "file or directory": candidate.exists,
        }[kind]()
        if not found:
            raise PermanentFailure(f"{label}: no {kind} {relative} in {self.where}")
        return candidate

    def read(self, relative: str, *, label: str, max_bytes: int) -> bytes:
        """The bytes of the file ``relative`` under this directory (at most ``max_bytes``)."""
        try:
            path = self.locate(relative, label=label, kind="file")
            if path.stat().st_size > max_bytes:
                raise PermanentFailure(f"{label}: {relative} is larger than {_size(max_bytes)}")
            return path.read_bytes()
        except OSError as exc:
            raise PermanentFailure(f"{label}: cannot read {relative}: {exc.strerror}") from None


@dataclass(frozen=True)
class Roots:
    """Every directory content may come from, as the server is configured (``None``: not configured).

    Built from the server's settings (``Roots.from_settings(settings)``) by whoever runs a provisioner
    or a deploy, and handed down: nothing below reads the environment."""

    scripts: Path | None = None
    playbooks: Path | None = None
    puppet_modules: Path | None = None
    salt_states: Path | None = None
    deploy_sources: Path | None = None
    # Where uploaded tarballs are stored (``<data_dir>/sources``).
    uploads: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None) -> Roots:
        """The directories of ``settings`` (a ``config.Settings``); ``None`` gives none configured."""
        if settings is None:
            return cls()
        data_dir = getattr(settings, "data_dir", None)
        return cls(
            scripts=settings.scripts_dir,
            playbooks=settings.playbooks_dir,
            puppet_modules=settings.puppet_modules_dir,
            salt_states=settings.salt_states_dir,
            deploy_sources=settings.deploy_sources_dir,
            uploads=Path(data_dir) / UPLOADS_SUBDIR if data_dir is not None else None,
        )

    def root(self, kind: RootKind) -> Root:
        """One of the directories, with the names its errors use."""
        setting, name, where = _NAMES[kind]
        return Root(getattr(self, kind), setting, name, where)

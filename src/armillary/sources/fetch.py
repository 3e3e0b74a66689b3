"""One typed source spec and one ``fetch``: a git repository, a path under an allowed directory, or an
uploaded tarball, brought onto the control host for a deploy or a provisioner to ship."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from armillary.failures import PermanentFailure
from armillary.sources import git
from armillary.sources.roots import Root
from armillary.sources.tarballs import UPLOAD_ID, copy_upload, tar_directory

TARBALL_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def relative_path(value: str) -> str:
    """``value`` if it is a relative path without ``..`` (``ValueError`` otherwise)."""
    parts = PurePosixPath(value).parts
    if not value or value.startswith("/") or "\x00" in value or ".." in parts:
        raise ValueError("must be a relative path without '..'")
    return value


class Source(BaseModel):
    """Where content comes from: exactly one of ``git`` (with an optional ``ref``), ``path`` (a directory
    or a file under the server directory the user of this source names) or ``upload`` (the id, a
    sha256, of a tarball POSTed to ``/api/v1/sources``)."""

    model_config = ConfigDict(extra="forbid")

    git: str | None = Field(None, min_length=1, max_length=2048, description="Repository URL")
    ref: str | None = Field(
        None, min_length=1, max_length=255, description="Branch, tag or commit (git only)"
    )
    path: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="Directory or tarball under the server's sources directory",
    )
    upload: str | None = Field(
        None, pattern=UPLOAD_ID, description="Id (sha256) of a tarball POSTed to /sources"
    )

    @field_validator("git")
    @classmethod
    def _git(cls, value: str | None) -> str | None:
        return None if value is None else git.check_url(value)

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        return None if value is None else git.check_ref(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else relative_path(value)

    @model_validator(mode="after")
    def _one(self) -> Source:
        if sum(value is not None for value in (self.git, self.path, self.upload)) != 1:
            raise ValueError("give exactly one of git, path or upload")
        if self.ref is not None and self.git is None:
            raise ValueError("ref goes with git")
        return self


@dataclass(frozen=True)
class Fetched:
    """What ``fetch`` brought: ``path`` is a directory (``tree``: a clone, or a directory under the root),
    a file under the root (``file``) or a checked copy of an uploaded tarball (``tarball``)."""

    path: Path
    kind: Literal["tree", "file", "tarball"]
    commit: str | None = None
    upload: str | None = None

    def origin(self) -> dict[str, Any]:
        """What a job records of where its content came from (``commit`` or ``upload``)."""
        return {k: v for k, v in (("commit", self.commit), ("upload", self.upload)) if v is not None}


def fetch(
    source: Source,
    dest: Path,
    *,
    root: Root,
    uploads: Path | None = None,
    timeout: float = git.GIT_TIMEOUT_S,
    local_git_anywhere: bool = False,
) -> Fetched:
    """Bring ``source`` onto the control host.

    ``dest`` is a directory that does not exist yet, made for a clone or an upload's copy (the caller
    removes it; a ``path`` source is not copied: the file or directory under ``root`` is given back, to
    be read only). ``root`` is the server directory paths (and local git repositories) must lie in;
    ``uploads`` is where uploaded tarballs are stored; ``timeout`` bounds each git command."""
    if source.git is not None:
        commit = git.clone(
            source.git, source.ref, dest, root=root, local_anywhere=local_git_anywhere, timeout=timeout
        )
        return Fetched(dest, "tree", commit=commit)
    if source.upload is not None:
        dest.mkdir(mode=0o700)
        copy = copy_upload(uploads, source.upload, dest / f"{source.upload}.tar.gz")
        return Fetched(copy, "tarball", upload=source.upload)
    found = root.locate(source.path or "", label="source")
    return Fetched(found, "tree" if found.is_dir() else "file")


def fetch_tarball(
    source: Source,
    out: Path,
    *,
    root: Root,
    uploads: Path | None = None,
    timeout: float = git.GIT_TIMEOUT_S,
) -> Fetched:
    """``source`` as one tarball at ``out`` (to send to a machine and unpack there with ``tar -xf``): a
    clone or a directory packed (``.git`` left out), a ``.tar``/``.tar.gz``/``.tgz`` under the root or an
    upload copied. The ``Fetched`` names ``out``, with the commit or upload id it came from."""
    if source.upload is not None:  # checked as it is copied: straight to ``out``
        return Fetched(copy_upload(uploads, source.upload, out), "tarball", upload=source.upload)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=out.parent) as scratch:
        fetched = fetch(source, Path(scratch) / "content", root=root, uploads=uploads, timeout=timeout)
        if fetched.kind == "tree":
            tar_directory(fetched.path, out)
        elif fetched.path.name.endswith(TARBALL_SUFFIXES):
            shutil.copyfile(fetched.path, out)
        else:
            raise PermanentFailure(f"source {source.path} is neither a directory nor a .tar/.tar.gz/.tgz")
    return Fetched(out, "tarball", commit=fetched.commit, upload=fetched.upload)

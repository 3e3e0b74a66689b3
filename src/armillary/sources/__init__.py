"""Fetching content to ship — a git repository, a path under a server directory, an uploaded tarball —
on the control host, for deploy and every provisioner, with one set of safety rules:

* **paths** are relative to a directory the server is configured with (``Roots``, from
  ``config.Settings``) and never leave it, symbolic links included (``Root.locate``, ``Root.read``);
* **git** runs without prompts, with git's own transports only, and a repository on the control host
  must lie in such a directory too (``git.clone``);
* **tarballs** from outside hold only files and directories under relative paths (``check_members``,
  ``check_tarball``); an upload is checked against its digest and again member by member when used.

The typed spec is ``Source`` (``{git, ref}`` | ``{path}`` | ``{upload}``); ``fetch`` brings it onto the
control host as a tree or a file, ``fetch_tarball`` as one tarball ready to send. A provisioner with a
spec of its own shape (a playbook, a states tree) calls the same pieces. Nothing here reads the
environment: the directories come from the caller (``Roots.from_settings(settings)``).
"""

from __future__ import annotations

from armillary.sources.fetch import TARBALL_SUFFIXES, Fetched, Source, fetch, fetch_tarball, relative_path
from armillary.sources.git import GIT_TIMEOUT_S, check_ref, check_url, clone, safe_url
from armillary.sources.roots import UPLOADS_SUBDIR, Root, RootKind, Roots
from armillary.sources.tarballs import (
    MAX_MEMBERS,
    MAX_UNPACKED_BYTES,
    UPLOAD_ID,
    SourceRejected,
    check_members,
    check_tarball,
    copy_upload,
    member_name,
    sha256_of,
    tar_directory,
    upload_path,
)

__all__ = [
    "GIT_TIMEOUT_S",
    "MAX_MEMBERS",
    "MAX_UNPACKED_BYTES",
    "TARBALL_SUFFIXES",
    "UPLOADS_SUBDIR",
    "UPLOAD_ID",
    "Fetched",
    "Root",
    "RootKind",
    "Roots",
    "Source",
    "SourceRejected",
    "check_members",
    "check_ref",
    "check_tarball",
    "check_url",
    "clone",
    "copy_upload",
    "fetch",
    "fetch_tarball",
    "member_name",
    "relative_path",
    "safe_url",
    "sha256_of",
    "tar_directory",
    "upload_path",
]

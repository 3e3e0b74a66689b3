"""Tarballs: the member check every archive from outside goes through, uploads, and packing a tree.

An archive someone else made (an upload, a puppet module) is read member by member *before* anything
is unpacked or sent: only regular files and directories, under relative paths without ``..`` (no
links, devices or FIFOs; no setuid/setgid bits where asked), within a count and a size.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from armillary.failures import PermanentFailure

UPLOAD_ID = r"^[0-9a-f]{64}$"
MAX_UNPACKED_BYTES = 8 * 1024**3
MAX_MEMBERS = 200_000


class SourceRejected(PermanentFailure):
    """A source that cannot be used: an unsafe or unreadable tarball, a malformed upload id."""


def member_name(member: tarfile.TarInfo) -> str:
    """A member's name without leading ``./`` nor trailing ``/``."""
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def check_members(
    members: Iterable[tarfile.TarInfo],
    *,
    max_members: int = MAX_MEMBERS,
    max_bytes: int = MAX_UNPACKED_BYTES,
    refuse_setid: bool = True,
) -> list[tarfile.TarInfo]:
    """The members, each checked (``SourceRejected`` naming the first bad one); ``.`` entries left out."""
    kept: list[tarfile.TarInfo] = []
    total = 0
    try:
        for member in members:
            name = member_name(member)
            if name in ("", "."):
                continue
            parts = name.split("/")
            if member.name.startswith("/") or "\x00" in name or ".." in parts or "" in parts:
                raise SourceRejected(
                    f"entry {member.name!r} is outside the archive: not a relative path without '..'"
                )
            if not (member.isfile() or member.isdir()):
                kind = "link" if (member.issym() or member.islnk()) else "special file"
                raise SourceRejected(
                    f"entry {member.name!r} is a {kind}: only files and directories are accepted "
                    "(no link or special file)"
                )
            if refuse_setid and member.mode & 0o6000:
                raise SourceRejected(f"entry {member.name!r} is setuid/setgid")
            kept.append(member)
            if len(kept) > max_members:
                raise SourceRejected(f"more than {max_members} entries")
            total += member.size
            if total > max_bytes:
                raise SourceRejected(f"unpacks to more than {max_bytes} bytes")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SourceRejected(f"not a readable tarball: {exc}") from None
    return kept


def check_tarball(path: Path, max_unpacked: int = MAX_UNPACKED_BYTES) -> int:
    """Refuse anything but a gzip tarball of regular files and directories under relative paths without
    ``..`` (no links, devices or FIFOs, no setuid/setgid bits), unpacking to at most ``max_unpacked``
    bytes. Returns the number of members; raises ``SourceRejected`` saying why."""
    with Path(path).open("rb") as handle:
        if handle.read(2) != b"\x1f\x8b":
            raise SourceRejected("not a gzip-compressed tarball")
    try:
        with tarfile.open(path, "r:gz") as tar:
            count = len(check_members(tar, max_bytes=max_unpacked))
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise SourceRejected(f"not a readable tarball: {exc}") from None
    if count == 0:
        raise SourceRejected("the tarball is empty")
    return count


def upload_path(uploads: Path, source_id: str) -> Path:
    """Where the uploaded tarball ``source_id`` (its sha256) is stored: ``<uploads>/<id>.tar.gz``."""
    if not re.match(UPLOAD_ID, source_id):
        raise SourceRejected("a source id is the sha256 of the tarball: 64 lowercase hex digits")
    return Path(uploads) / f"{source_id}.tar.gz"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def copy_upload(uploads: Path | None, source_id: str, out: Path) -> Path:
    """Copy the uploaded tarball ``source_id`` to ``out``, then check its digest and its members again
    (the store is a directory on disk: what is there now is what is checked)."""
    if uploads is None:
        raise PermanentFailure("uploaded sources need the server's data directory, which this worker lacks")
    stored = upload_path(uploads, source_id)
    try:
        shutil.copyfile(stored, out)
    except FileNotFoundError:
        raise PermanentFailure(f"no uploaded source {source_id} (POST it to /api/v1/sources first)") from None
    if sha256_of(out) != source_id:
        raise PermanentFailure(f"uploaded source {source_id}: the stored file does not match its digest")
    try:
        check_tarball(out)
    except SourceRejected as exc:
        raise SourceRejected(f"uploaded source {source_id}: {exc}") from None
    return out


def tar_directory(directory: Path, out: Path) -> Path:
    """``directory``'s content as a gzip tarball at ``out`` (paths relative to it; ``.git`` left out;
    links kept as links)."""

    def skip_git(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        return None if ".git" in PurePosixPath(info.name).parts else info

    with tarfile.open(out, "w:gz") as tar:
        for child in sorted(Path(directory).iterdir()):
            tar.add(child, arcname=child.name, filter=skip_git)
    return out

"""/api/v1/sources: deploy sources uploaded to the server as tarballs (issue 7, "sync"; issue 22, hole 11).

``POST /sources`` takes the tarball as the raw request body (``Content-Type: application/gzip`` or
``application/octet-stream``), at most ``source_max_bytes`` (``ARMILLARY_SOURCE_MAX_BYTES``, default 512 MiB;
a larger ``Content-Length`` is refused before anything is read, a body growing past it while it streams in
too: 413). It is written to a private temporary file in the data directory while its sha256 is computed,
then checked (``armillary.sources.check_tarball``: a gzip tarball of regular files and
directories only, relative paths without ``..``, no links, devices or setuid bits, a bounded unpacked
size: otherwise 422) and only then renamed to ``<data_dir>/sources/<sha256>.tar.gz``. A deploy names it
as ``source: {upload: "<sha256>"}``.

Who: uploading needs a role that deploys somewhere (``user`` or ``operator`` in at least one environment)
or an admin; viewers and accounts without a role get 403. Each upload is owned by who sent it
(``armillary.domain.uploads``) and charged to their quota of stored bytes (``source_quota_bytes``,
``ARMILLARY_SOURCE_QUOTA_BYTES``, default 2 GiB; admins have none): checked from ``Content-Length`` before
the body is read and while it streams in (letting through what may be a re-upload of bytes the caller already
owns, which charges nothing), then on the stored size when it is recorded; over it: 403 ``quota-exceeded``
naming the quota and the usage, and nothing is stored. Storage is content-addressed: the
same bytes are stored once, but every user who uploads them owns them (and is charged for them). 201 when
the upload is new to the caller, 200 (same id, nothing more charged) when they had already uploaded it.

``GET /sources``: the caller's own uploads. ``GET /sources/{id}``: any signed-in user who knows the id
(its sha256) sees its size and upload time, and whether they own it (admins also see who does).
``DELETE /sources/{id}``: an owner drops their own upload (the file goes with its last owner); an admin
removes it for every owner; anyone else gets 403. A deploy that names a removed source fails in its sync
step, saying so. Files stored before owners were recorded stay deployable; only admins may delete them.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from typing import Annotated

from fastapi import APIRouter, Depends, Path as PathParam, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary import sources
from armillary.api.deps import PageParams, SessionDep, paginate
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain import uploads
from armillary.domain.errors import DomainError, Forbidden, InvalidInput, NotFound
from armillary.domain.schemas import Page
from armillary.domain.uploads import SourceOwner, UploadedSource

router = APIRouter(prefix="/sources", tags=["sources"])

# A source id is the sha256 of the tarball (what POST answers): 64 lowercase hex digits.
SourceId = Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$", description="sha256 of the tarball")]
ACCEPTED_TYPES = {"application/gzip", "application/x-gzip", "application/octet-stream"}


class TooLarge(DomainError):
    status, slug, title = 413, "too-large", "Request body too large"


class UnsupportedType(DomainError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class SourceOut(BaseModel):
    id: str
    size: int
    uploaded_at: datetime | None = Field(None, description="When these bytes were first stored")
    owned: bool = Field(False, description="Whether you uploaded it (charged to your quota; yours to delete)")
    owners: list[str] | None = Field(None, description="Who uploaded it (shown to admins only)")


def _path(request: Request, source_id: str) -> Path:
    try:
        return sources.upload_path(Path(request.app.state.settings.data_dir) / sources.UPLOADS_SUBDIR, source_id)
    except sources.SourceRejected as exc:
        raise InvalidInput("id", str(exc)) from None


def _describe(session: Session, access: Access, source_id: str, path: Path) -> SourceOut:
    """An uploaded source as the caller sees it (404 when its file is gone)."""
    if not path.is_file():
        raise NotFound(f"no uploaded source {source_id}")
    row = session.get(UploadedSource, source_id)
    if row is None:  # stored before owners were recorded
        stat = path.stat()
        size, uploaded_at = stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC)
    else:
        size, uploaded_at = row.size, row.created_at
    owned = row is not None and uploads.holds(session, source_id, access.principal.user_id)
    owners = (uploads.owners(session, source_id) if row is not None else []) if access.is_admin else None
    return SourceOut(id=source_id, size=size, uploaded_at=uploaded_at, owned=owned, owners=owners)


def _quota(request: Request, access: Access) -> int | None:
    return None if access.is_admin else request.app.state.settings.source_quota_bytes


def _room(session: Session, user_id: int, declared: int | None) -> tuple[int, int, bool]:
    """The caller's usage, their largest upload, and whether they own one of ``declared`` bytes; ends the
    read transaction (not held open while the body streams in)."""
    try:
        used, largest = uploads.room(session, user_id)
        maybe_owned = declared is not None and uploads.owns_one_of_size(session, user_id, declared)
        return used, largest, maybe_owned
    finally:
        session.commit()


def _record(session: Session, access: Access, quota: int | None, source_id: str, size: int,
            incoming: Path, final: Path) -> tuple[bool, SourceOut]:
    """Charge and record the upload, put the file in place while the source's row is locked (so a
    concurrent delete of its last owner cannot remove it under this claim), then commit."""
    principal = access.principal
    new = uploads.claim(session, source_id, size, principal.user_id, principal.name, quota)
    os.chmod(incoming, 0o600)
    os.replace(incoming, final)  # atomic: readers see all of it or none (the same bytes if it was there)
    out = _describe(session, access, source_id, final)
    session.commit()
    return new, out


@router.post("", status_code=201, response_model=SourceOut,
             responses={200: {"description": "you had already uploaded the same tarball"},
                        413: {"description": "larger than the limit"}, 415: {"description": "not a tarball type"},
                        422: {"description": "not a safe gzip tarball"}},
             openapi_extra={"requestBody": {"required": True, "description": "The .tar.gz, as the raw body", "content": {
                 media: {"schema": {"type": "string", "format": "binary"}}
                 for media in ("application/gzip", "application/octet-stream")}}})
async def upload_source(request: Request, session: Session = SessionDep,
                        access: Access = requires(Permission.DEPLOYER)) -> JSONResponse:
    """Upload a deploy source (a ``.tar.gz`` as the raw body); answers its id (sha256) and size.

    Needs the user or operator role in some environment; charged to your quota of stored uploads."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise UnsupportedType(f"send the tarball as application/gzip or application/octet-stream, not "
                              f"{content_type or 'no content type'}")
    limit = request.app.state.settings.source_max_bytes
    declared_header = request.headers.get("content-length")
    declared = int(declared_header) if declared_header is not None and declared_header.isdigit() else None
    if declared is not None and declared > limit:
        raise TooLarge(f"the tarball is {declared} bytes; the limit is {limit}")
    # The quota, up front: a body that cannot fit is refused before it is read, unless it may be a re-upload
    # of one the caller owns (same size; charged nothing). The stored size is checked again when recorded.
    quota = _quota(request, access)
    used = cap = 0
    if quota is not None:
        user_id = access.principal.user_id
        used, largest, maybe_owned = await run_in_threadpool(_room, session, user_id, declared)
        if declared is not None and used + declared > quota and not maybe_owned:
            raise uploads.over_quota(access.principal.name, quota, used, declared)
        cap = max(quota - used, largest)
    store = Path(request.app.state.settings.data_dir) / sources.UPLOADS_SUBDIR
    store.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=".incoming-", suffix=".tar.gz", dir=store)  # 0600
    incoming = Path(name)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as handle:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the tarball is over the limit of {limit} bytes")
                if quota is not None and size > cap:
                    raise uploads.over_quota(access.principal.name, quota, used, size)
                digest.update(chunk)
                handle.write(chunk)
        if size == 0:
            raise InvalidInput("body", "the request body is empty: send the tarball")
        try:
            await run_in_threadpool(sources.check_tarball, incoming)
        except sources.SourceRejected as exc:
            raise InvalidInput("body", str(exc)) from None
        source_id = digest.hexdigest()
        final = sources.upload_path(Path(request.app.state.settings.data_dir) / sources.UPLOADS_SUBDIR, source_id)
        new, out = await run_in_threadpool(_record, session, access, quota, source_id, size, incoming, final)
    finally:
        incoming.unlink(missing_ok=True)
    return JSONResponse(out.model_dump(mode="json", exclude_none=True), status_code=201 if new else 200,
                        headers={"Location": str(request.url_for("get_source", source_id=source_id))})


@router.get("", response_model=Page[SourceOut], response_model_exclude_none=True)
def list_sources(request: Request, response: Response, page: PageParams = Depends(),
                 session: Session = SessionDep, access: Access = requires(Permission.AUTHENTICATED)) -> dict:
    """Your uploads, oldest first: each counts toward your quota until you delete it."""
    query = select(SourceOwner).where(SourceOwner.user_id == access.principal.user_id)
    rows, next_url = paginate(session, query, SourceOwner, page, request, response)
    items = [SourceOut(id=row.source_id, size=row.source.size, uploaded_at=row.source.created_at, owned=True)
             for row in rows]
    return {"items": items, "next": next_url}


@router.get("/{source_id}", response_model=SourceOut, response_model_exclude_none=True, name="get_source")
def get_source(source_id: SourceId, request: Request, session: Session = SessionDep,
               access: Access = requires(Permission.AUTHENTICATED)) -> SourceOut:
    """An uploaded source's id, size and upload time, and whether you own it."""
    return _describe(session, access, source_id, _path(request, source_id))


@router.delete("/{source_id}", status_code=204)
def delete_source(source_id: SourceId, request: Request, session: Session = SessionDep,
                  access: Access = requires(Permission.OWNER)) -> Response:
    """Delete your upload (the file goes when no one else uploaded it too); an admin removes it for every
    owner. Releases already deployed from it are not touched."""
    path = _path(request, source_id)
    source = uploads.lock(session, source_id)
    if source is None:
        if not path.is_file():
            raise NotFound(f"no uploaded source {source_id}")
        if not access.is_admin:
            raise Forbidden("this source was stored before owners were recorded: only an admin may delete it")
        path.unlink(missing_ok=True)
        return Response(status_code=204)
    if access.is_admin:
        gone = uploads.release(session, source, None)
    else:
        if not uploads.holds(session, source_id, access.principal.user_id):
            if not path.is_file():
                raise NotFound(f"no uploaded source {source_id}")
            raise Forbidden("you did not upload this source: only its owners (or an admin) may delete it")
        gone = uploads.release(session, source, access.principal.user_id)
    if gone:
        path.unlink(missing_ok=True)  # before the commit, under the row's lock: no claim can land meanwhile
    return Response(status_code=204)

"""/api/v1/sources: deploy sources uploaded to the server as tarballs (issue 7, "sync").

``POST /sources`` takes the tarball as the raw request body (``Content-Type: application/gzip`` or
``application/octet-stream``), at most ``ARMILLARY_SOURCE_MAX_BYTES`` bytes (default 512 MiB; a larger
``Content-Length`` is refused before anything is read, a body growing past it while it streams in too:
413). It is written to a private temporary file in the data directory while its sha256 is computed, then
checked (``armillary.engine.deploy.check_source_tarball``: a gzip tarball of regular files and
directories only, relative paths without ``..``, no links, devices or setuid bits, a bounded unpacked
size: otherwise 422) and only then renamed to ``<data_dir>/sources/<sha256>.tar.gz``. Storage is
content-addressed: uploading the same bytes again stores nothing new and answers 200 with the same id
(201 the first time). A deploy names it as ``source: {upload: "<sha256>"}``.

``GET /sources/{id}``: its id, size and upload time. ``DELETE /sources/{id}``: removes it (204); a deploy
that names it afterwards fails in its sync step, saying so.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.errors import DomainError, InvalidInput, NotFound
from armillary.engine import deploy

router = APIRouter(prefix="/sources", tags=["sources"])

MAX_BYTES_ENV = "ARMILLARY_SOURCE_MAX_BYTES"
DEFAULT_MAX_BYTES = 512 * 1024**2
ACCEPTED_TYPES = {"application/gzip", "application/x-gzip", "application/octet-stream"}


class TooLarge(DomainError):
    status, slug, title = 413, "too-large", "Request body too large"


class UnsupportedType(DomainError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class SourceOut(BaseModel):
    id: str
    size: int
    uploaded_at: datetime | None = None


def max_bytes() -> int:
    try:
        return int(os.environ.get(MAX_BYTES_ENV) or DEFAULT_MAX_BYTES)
    except ValueError:
        return DEFAULT_MAX_BYTES


def _store(request: Request) -> Path:
    return Path(request.app.state.settings.data_dir) / deploy.UPLOADS_SUBDIR


def _stored(request: Request, source_id: str) -> Path:
    try:
        path = deploy.uploaded_source_path(request.app.state.settings.data_dir, source_id)
    except deploy.SourceRejected as exc:
        raise InvalidInput("id", str(exc)) from None
    if not path.is_file():
        raise NotFound(f"no uploaded source {source_id}")
    return path


def _out(source_id: str, path: Path) -> SourceOut:
    stat = path.stat()
    return SourceOut(id=source_id, size=stat.st_size, uploaded_at=datetime.fromtimestamp(stat.st_mtime, UTC))


@router.post("", status_code=201, response_model=SourceOut,
             responses={200: {"description": "the same tarball was already uploaded"},
                        413: {"description": "larger than the limit"}, 415: {"description": "not a tarball type"},
                        422: {"description": "not a safe gzip tarball"}})
async def upload_source(request: Request, access: Access = requires(Permission.AUTHENTICATED)) -> JSONResponse:
    """Upload a deploy source (a ``.tar.gz`` as the raw body); answers its id (sha256) and size."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise UnsupportedType(f"send the tarball as application/gzip or application/octet-stream, not "
                              f"{content_type or 'no content type'}")
    limit = max_bytes()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the tarball is {declared} bytes; the limit is {limit}")
    store = _store(request)
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
                digest.update(chunk)
                handle.write(chunk)
        if size == 0:
            raise InvalidInput("body", "the request body is empty: send the tarball")
        try:
            await run_in_threadpool(deploy.check_source_tarball, incoming)
        except deploy.SourceRejected as exc:
            raise InvalidInput("body", str(exc)) from None
        source_id = digest.hexdigest()
        final = deploy.uploaded_source_path(request.app.state.settings.data_dir, source_id)
        existed = final.is_file()
        if existed:
            incoming.unlink()
        else:
            os.chmod(incoming, 0o600)
            os.replace(incoming, final)  # atomic: a reader sees the whole tarball or none
    finally:
        incoming.unlink(missing_ok=True)
    body = _out(source_id, final).model_dump(mode="json")
    return JSONResponse(body, status_code=200 if existed else 201,
                        headers={"Location": str(request.url_for("get_source", source_id=source_id))})


@router.get("/{source_id}", response_model=SourceOut, name="get_source")
def get_source(source_id: str, request: Request, access: Access = requires(Permission.AUTHENTICATED)) -> SourceOut:
    """An uploaded source's id, size and upload time."""
    return _out(source_id, _stored(request, source_id))


@router.delete("/{source_id}", status_code=204)
def delete_source(source_id: str, request: Request, access: Access = requires(Permission.ADMIN)) -> Response:
    """Remove an uploaded source (releases already deployed from it are not touched)."""
    _stored(request, source_id).unlink(missing_ok=True)
    return Response(status_code=204)

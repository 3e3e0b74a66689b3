"""Shared request plumbing: the DB session, references by id or name, keyset pages, ETags."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Path, Query, Request, Response
from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import QueryableAttribute, Session

from armillary.domain.errors import Conflict, InvalidInput, NotFound, PreconditionFailed, UnknownReference
from armillary.domain.models import Base
from armillary.domain.schemas import MAX_ID

M = TypeVar("M", bound=Base)

MAX_LIMIT = 1000
# The one shape of a numeric id in a path or a query: ASCII digits within the ids' bounds, else 422.
IdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="Numeric id")]


# Commits and rollbacks of request sessions run on their own threads. On the default pool they would
# queue behind handlers that wait for SQLite's write lock, which only those commits release: with
# more concurrent writes than threads (40) every request would stall until the lock timeout.
_session_finishers = anyio.CapacityLimiter(16)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One session per request; committed when the handler returns, rolled back on error.

    A session the handler already committed (and did not use again) has nothing left to finish: it is
    closed here, without the trip to a thread."""
    session = request.app.state.db.sessionmaker()
    try:
        yield session
    except BaseException:
        await _finished(session, False)
        raise
    await _finished(session, True)


async def _finished(session: Session, commit: bool) -> None:
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        await anyio.to_thread.run_sync(_finish, session, commit, limiter=_session_finishers)
    else:
        session.close()  # no transaction, no connection: nothing that blocks


def _finish(session: Session, commit: bool) -> None:
    """Commit (or roll back) and close, in one trip to a thread."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


SessionDep = Depends(get_session, scope="function")  # commit before the response is sent


def id_of(ref: int | str) -> int | None:
    """The id a reference names, or None when it is a name.

    Only ASCII digits make an id (``"²".isdigit()`` is true, ``int("²")`` fails); a number past
    the ids' bounds names no row, so it becomes 0, which matches nothing: a 404, never an overflow."""
    if isinstance(ref, int):
        number = ref
    elif ref.isascii() and ref.isdigit():
        number = int(ref)
    else:
        return None
    return number if 0 < number <= MAX_ID else 0


def _by_ref(model: type[M], ref: int | str):
    ref_id = id_of(ref)
    if ref_id is not None:
        return model.id == ref_id  # type: ignore[attr-defined]
    return model.name == ref  # type: ignore[attr-defined]


def get_by_ref(session: Session, model: type[M], ref: int | str, what: str) -> M:
    """Load a row by id or unique name, or 404 naming what was looked for."""
    found = session.scalars(select(model).where(_by_ref(model, ref))).first()
    if found is None:
        raise NotFound(f"no {what} {ref!r}")
    return found


def resolve_ref(session: Session, model: type[M], ref: int | str, field: str, what: str) -> M:
    """Like ``get_by_ref`` but for references inside a body: an unknown one is a 422 on that field."""
    found = session.scalars(select(model).where(_by_ref(model, ref))).first()
    if found is None:
        raise UnknownReference(field, f"no {what} {ref!r}")
    return found


# ---------------------------------------------------------------- keyset pagination


# A cursor is the id a page ends at, in ASCII digits: a shape the OpenAPI document can state exactly
# (``openapi.py`` gives every ``cursor`` query parameter this pattern), so a client, or a fuzzer, that
# sends a cursor of the documented shape is never refused. Past the largest id it names an empty page.
CURSOR_PATTERN = r"^[0-9]{1,10}$"
_CURSOR = re.compile(CURSOR_PATTERN)


class PageParams:
    def __init__(
        self,
        limit: int = Query(100, ge=1, le=MAX_LIMIT, description="Items per page (at most 1000)"),
        cursor: str | None = Query(None, pattern=CURSOR_PATTERN, description="Cursor from a previous page's `next`"),
    ) -> None:
        self.limit = limit
        self.after_id = decode_cursor(cursor) if cursor is not None else 0


def encode_cursor(last_id: int) -> str:
    return str(last_id)


def decode_cursor(cursor: str) -> int:
    if not _CURSOR.match(cursor):
        raise InvalidInput("cursor", "not a cursor returned by this API")
    return min(int(cursor), MAX_ID)


def paginate(
    session: Session,
    query: Select[Any],
    model: type[M],
    page: PageParams,
    request: Request,
    response: Response,
    key: ColumnElement[int] | QueryableAttribute[int] | None = None,
) -> tuple[list[M], str | None]:
    """Run ``query`` from the cursor on, ordered by id; return the rows and the next page's URL.

    ``key`` is the column the page is ordered and cut by; it must always equal the row's id
    (default: ``model.id``). A query driven by a joined index passes that index's id column, so the
    database can read the page straight off the index instead of sorting every match. The cursor then
    bounds both columns: PostgreSQL does not carry ``key > n`` over to ``id`` through the join, and
    without it a merge join reads the table's id index from the start on every deep page.
    """
    model_id = model.id  # type: ignore[attr-defined]
    if key is None:
        key = model_id
    else:
        query = query.where(model_id > page.after_id)
    rows = list(session.scalars(query.where(key > page.after_id).order_by(key).limit(page.limit + 1)).unique())
    next_url = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        next_url = str(request.url.include_query_params(cursor=encode_cursor(rows[-1].id), limit=page.limit))
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return rows, next_url


def newest_first(
    session: Session, query: Select[Any], model: type[M], request: Request, limit: int, cursor: str | None,
    filters: tuple[tuple[Any, Any], ...] = (),
) -> tuple[list[M], str | None]:
    """A keyset page newest first (jobs, audit events): ``column == value`` for every given value."""
    model_id = model.id  # type: ignore[attr-defined]
    if cursor is not None:
        query = query.where(model_id < decode_cursor(cursor))
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    rows = list(session.scalars(query.order_by(model_id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, str(request.url.include_query_params(cursor=encode_cursor(rows[-1].id), limit=limit))


# ---------------------------------------------------------------- ETags


def etag_of(version: int) -> str:
    return f'"{version}"'


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = etag_of(version)


def etag_matches(header: str, version: int) -> bool:
    """Whether an ``If-Match``/``If-None-Match`` list (``*``, weak tags, several tags) names ``version``."""
    tags = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    return "*" in tags or etag_of(version) in tags


def check_if_match(request: Request, version: int) -> None:
    """Refuse an update made against a stale copy (412) when the client sent ``If-Match``."""
    header = request.headers.get("if-match")
    if header is None:
        return
    if not etag_matches(header, version):
        raise PreconditionFailed(
            f"If-Match {header} does not match the current ETag {etag_of(version)}; reload and retry",
            current_etag=etag_of(version),
        )


def ensure_unique_name(session: Session, model: type[M], name: str, what: str, exclude_id: int | None = None) -> None:
    """409 with a clear detail when another row already uses ``name``."""
    query = select(model.id).where(model.name == name)  # type: ignore[attr-defined]
    if exclude_id is not None:
        query = query.where(model.id != exclude_id)  # type: ignore[attr-defined]
    if session.scalar(query) is not None:
        article = "an" if what[0] in "aeiou" else "a"
        raise Conflict(
            f"{article} {what} named {name!r} already exists", errors=[{"field": "name", "message": "taken"}]
        )


def created(response: Response, request: Request, resource_id: int, version: int) -> None:
    response.headers["Location"] = f"{request.url.path.rstrip('/')}/{resource_id}"
    set_etag(response, version)

"""Finding what a resource's properties name (a hypervisor, a type, a profile, a pool, a zone) inside
the stack's environment: a name or an id; anything else is a permanent failure naming the property."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.stacks.resources.base import ResourceFailure

M = TypeVar("M")


def find(session: Session, model: type[M], ref: Any, what: str, environment_id: int | None = None) -> M:
    """The row ``ref`` (an id or a name) names; with ``environment_id``, only one of that environment."""
    column = model.id if isinstance(ref, int) else model.name  # type: ignore[attr-defined]
    row = session.scalar(select(model).where(column == ref))
    if row is None or (environment_id is not None
                       and getattr(row, "environment_id", environment_id) != environment_id):
        raise ResourceFailure(f"no {what} {ref!r}" + (" in the stack's environment" if environment_id else ""))
    return row

"""Selections: which systems a bulk job or a schedule acts on (the job: ``armillary.workflows.bulk``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from armillary.domain.errors import InvalidInput, UnknownReference
from armillary.domain.job_schemas import Selector
from armillary.domain.models import Environment, System, SystemLabel, SystemType

MAX_SELECTION = 100_000


def _ref_filter(model, ref):
    return model.id == ref if isinstance(ref, int) else model.name == ref


def resolve_selector(
    session: Session, selector: Selector, scope: Callable[[Select[Any]], Select[Any]] | None = None
) -> list[int]:
    """Ids of the systems matching every given criterion, in id order; ``scope`` narrows the query
    further (the API passes the caller's visible environments)."""
    query = select(System.id) if scope is None else scope(select(System.id))
    if selector.environment is not None:
        env_id = session.scalar(select(Environment.id).where(_ref_filter(Environment, selector.environment)))
        if env_id is None:
            raise UnknownReference("selector.environment", f"no environment {selector.environment!r}")
        query = query.where(System.environment_id == env_id)
    if selector.type is not None:
        type_id = session.scalar(select(SystemType.id).where(_ref_filter(SystemType, selector.type)))
        if type_id is None:
            raise UnknownReference("selector.type", f"no type {selector.type!r}")
        query = query.where(System.type_id == type_id)
    if selector.state is not None:
        query = query.where(System.state == selector.state)
    for key, value in selector.labels.items():
        query = query.where(
            System.id.in_(select(SystemLabel.system_id).where(SystemLabel.key == key, SystemLabel.value == value))
        )
    if selector.systems is not None:
        ids = [r for r in selector.systems if isinstance(r, int)]
        names = [r.lower() for r in selector.systems if isinstance(r, str)]
        query = query.where(or_(System.id.in_(ids), System.hostname.in_(names)))
    found = list(session.scalars(query.order_by(System.id).limit(MAX_SELECTION + 1)))
    if len(found) > MAX_SELECTION:
        raise InvalidInput("selector", f"matches more than {MAX_SELECTION} systems; narrow it")
    return found

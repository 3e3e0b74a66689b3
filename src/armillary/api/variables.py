"""/api/v1/variables: global variables, the lowest level of precedence."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from armillary.api.deps import SessionDep
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.models import GlobalVariable
from armillary.domain.schemas import Variables

router = APIRouter(prefix="/variables", tags=["variables"])


def _all(session: Session) -> dict[str, Any]:
    return {v.key: v.value for v in session.scalars(select(GlobalVariable).order_by(GlobalVariable.key))}


@router.get("", response_model=dict[str, Any])
def get_global_variables(session: Session = SessionDep, access: Access = requires(Permission.AUTHENTICATED)) -> dict[str, Any]:
    return _all(session)


@router.put("", response_model=dict[str, Any])
def replace_global_variables(body: Variables, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> dict[str, Any]:
    """Replace every global variable with the given mapping."""
    session.execute(delete(GlobalVariable))
    session.add_all(GlobalVariable(key=k, value=v) for k, v in body.items())
    session.flush()
    return _all(session)


@router.patch("", response_model=dict[str, Any])
def merge_global_variables(body: Variables, session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> dict[str, Any]:
    """Set the given keys; a key given as null is removed."""
    for key, value in body.items():
        existing = session.get(GlobalVariable, key)
        if value is None:
            if existing is not None:
                session.delete(existing)
        elif existing is None:
            session.add(GlobalVariable(key=key, value=value))
        else:
            existing.value = value
    session.flush()
    return _all(session)

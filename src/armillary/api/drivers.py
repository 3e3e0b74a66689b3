"""/api/v1/drivers: the installed drivers and the JSON schemas of their settings."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from armillary.api.hypervisors import driver_for
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.drivers.registry import drivers

router = APIRouter(prefix="/drivers", tags=["drivers"])


@router.get("", response_model=list[dict[str, Any]])
def list_drivers(access: Access = requires(Permission.AUTHENTICATED)) -> list[dict[str, Any]]:
    return [cls.describe() for cls in drivers().values()]


@router.get("/{name}", response_model=dict[str, Any])
def get_driver(name: str, access: Access = requires(Permission.AUTHENTICATED)) -> dict[str, Any]:
    return driver_for(name, field="name").describe()

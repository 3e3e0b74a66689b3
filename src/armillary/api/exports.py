"""/api/v1/exports: the inventory in other tools' formats. First: Prometheus HTTP service discovery.

``GET /api/v1/exports/prometheus-sd`` answers in the format of Prometheus's ``http_sd_configs``: a list
of target groups, here one per system, ``{"targets": ["<address>:<port>"], "labels": {...}}``. The
address is the system's first recorded address, else its hostname; the port is a variable of the
system (``port_variable``, default ``prometheus_port``, resolved as every variable is: global <
environment < group < type < system), else ``?port=``; a system with neither is left out. Labels are
Prometheus's discovery metadata, ``__meta_armillary_*``: kept for relabelling, dropped after it unless
a ``relabel_configs`` copies them (docs/metrics.md has the prometheus.yml).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from armillary.api.deps import SessionDep, get_by_ref
from armillary.api.lookups import get_environment_for, label_filter_query, parse_label_filters
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.domain.models import System, SystemLabel, SystemType
from armillary.domain.variables import layers_for, resolve

router = APIRouter(prefix="/exports", tags=["exports"])

META = "__meta_armillary_"
_NOT_IN_LABEL_NAME = re.compile(r"[^a-zA-Z0-9_]")


class TargetGroup(BaseModel):
    """One entry of Prometheus's HTTP service discovery answer."""

    targets: list[str]
    labels: dict[str, str]


@router.get("/prometheus-sd", response_model=list[TargetGroup])
def prometheus_sd(
    environment: str | None = Query(None, max_length=63, description="Environment id or name"),
    type: str | None = Query(None, max_length=63, description="Type id or name"),
    state: str | None = Query(None, max_length=31, description="Only systems in this state (e.g. ready)"),
    label: list[str] = label_filter_query(),
    port_variable: str = Query("prometheus_port", min_length=1, max_length=255,
                               description="The variable holding each system's port"),
    port: int | None = Query(None, ge=1, le=65535, description="Port of systems without the variable"),
    session: Session = SessionDep,
    access: Access = requires(Permission.ENV_READ),
) -> list[dict[str, Any]]:
    """The systems the caller can see, filtered, as Prometheus scrape targets (``http_sd_configs``)."""
    query = access.visible(select(System), System.environment_id).order_by(System.id)
    if environment is not None:
        query = query.where(System.environment_id == get_environment_for(session, environment, access).id)
    if type is not None:
        query = query.where(System.type_id == get_by_ref(session, SystemType, type, "type").id)
    if state is not None:
        query = query.where(System.state == state)
    for key, value in parse_label_filters(label).items():
        query = query.where(exists().where(SystemLabel.system_id == System.id, SystemLabel.key == key,
                                           SystemLabel.value == value))
    groups = []
    for system in session.scalars(query).unique():
        system_port = _port(session, system, port_variable, port)
        if system_port is not None:
            groups.append({"targets": [_target(system, system_port)], "labels": sd_labels(system)})
    return groups


def _port(session: Session, system: System, variable: str, default: int | None) -> int | None:
    """The system's value of ``variable`` as a port, else ``default`` (a value that is no port counts as unset)."""
    resolved = resolve(layers_for(session, system)).get(variable)
    try:
        value = int(resolved.value) if resolved is not None else None
    except (TypeError, ValueError):
        value = None
    return value if value is not None and 0 < value < 65536 else default


def _target(system: System, port: int) -> str:
    host = (system.addresses or [system.hostname])[0]
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a hostname
    return f"{host}:{port}"


def sd_labels(system: System) -> dict[str, str]:
    """The discovery labels of a system; its own labels as ``__meta_armillary_label_<key>``, the key's
    characters that a Prometheus label name cannot hold made ``_``."""
    labels = {f"{META}system_id": str(system.id), f"{META}hostname": system.hostname,
              f"{META}environment": system.environment.name, f"{META}state": system.state}
    if system.type is not None:
        labels[f"{META}type"] = system.type.name
    if system.hypervisor is not None:
        labels[f"{META}hypervisor"] = system.hypervisor.name
    for item in system.labels:
        labels[f"{META}label_{_NOT_IN_LABEL_NAME.sub('_', item.key)}"] = item.value
    return labels

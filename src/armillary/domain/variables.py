"""Variable resolution: global < environment < group < type < facts < system.

``facts`` are what an audit gathered on the machine (``facts.os.id``...; ``armillary.audits``), its source
named ``audit <name>``: observed, bottom-up data, which the system's own variables still override.

Keys are merged shallowly: a key set at a higher level replaces the whole value from a lower
one (no deep merge of nested mappings, so what a system gets is always one source's value and
the API can say exactly where it came from). Among groups, the one with the higher ``priority``
wins; equal priorities are ordered by name, so the result never depends on row order.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.domain.models import GlobalVariable, Group, System
from armillary.domain.schemas import ResolvedVariable, ResolvedVariables, VariableSource

PRECEDENCE = ["global", "environment", "group", "type", "system"]
# A system an audit kept facts of has one more level, between its type and itself.
PRECEDENCE_WITH_FACTS = ["global", "environment", "group", "type", "facts", "system"]


def matching_groups(groups: list[Group], labels: dict[str, str]) -> list[Group]:
    """Groups whose selector labels the system all carries, lowest precedence first."""
    members = [g for g in groups if g.selector and all(labels.get(k) == v for k, v in g.selector.items())]
    return sorted(members, key=lambda g: (g.priority, g.name))


def layers_for(session: Session, system: System) -> list[tuple[VariableSource, dict[str, Any]]]:
    """Every source of variables for the system, lowest precedence first."""
    labels = {label.key: label.value for label in system.labels}
    groups = matching_groups(list(session.scalars(select(Group))), labels)
    layers: list[tuple[VariableSource, dict[str, Any]]] = [
        (VariableSource(level="global"), {v.key: v.value for v in session.scalars(select(GlobalVariable))}),
        (VariableSource(level="environment", name=system.environment.name), system.environment.variables or {}),
    ]
    layers += [(VariableSource(level="group", name=g.name), g.variables or {}) for g in groups]
    if system.type is not None:
        layers.append((VariableSource(level="type", name=system.type.name), system.type.variables or {}))
    if system.facts:
        layers.append((VariableSource(level="facts", name=system.facts_source),
                       {f"facts.{key}": value for key, value in system.facts.items()}))
    layers.append((VariableSource(level="system", name=system.hostname), system.variables or {}))
    return layers


def resolve(layers: list[tuple[VariableSource, dict[str, Any]]]) -> dict[str, ResolvedVariable]:
    resolved: dict[str, ResolvedVariable] = {}
    for source, values in layers:
        for key, value in values.items():
            shadowed = resolved.get(key)
            overrides = [*shadowed.overrides, shadowed.source] if shadowed else []
            resolved[key] = ResolvedVariable(value=value, source=source, overrides=overrides)
    return dict(sorted(resolved.items()))


def resolve_system(session: Session, system: System) -> ResolvedVariables:
    return ResolvedVariables(
        system_id=system.id, precedence=PRECEDENCE_WITH_FACTS if system.facts else PRECEDENCE,
        variables=resolve(layers_for(session, system)),
    )


def plain_values(resolved: ResolvedVariables) -> dict[str, Any]:
    """Just key → value, as a provisioner wants them."""
    return {key: item.value for key, item in resolved.variables.items()}

"""The plan: what applying a template to a stack's recorded state would do, resource by resource.

Per resource, in dependency order: ``create`` (or ``adopt`` with ``external_id``), ``update`` in place
(the changed property paths), ``replace`` (the property forcing it and the type's reason, or the drift
found by ``check``), ``delete`` (or ``forget`` with ``deletion_policy: retain``) for what the template no
longer has, else ``no-op``; plus the outputs it will have (``(known after apply)`` where they read what
is not made yet). No side effects: plan reads the template and the stack's records only. The apply
workflow calls ``decide`` for each resource when its layer starts, so apply and plan agree by
construction, and a resumed apply decides again from what is recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from armillary.stacks import functions, graph, parameters, template
from armillary.stacks.models import ResourceStatus, StackResource
from armillary.stacks.resources.base import changed_paths, resource_types

KNOWN_AFTER_APPLY = "(known after apply)"
REDACTED = "******"


@dataclass
class Change:
    resource: str
    type: str
    action: str  # create | adopt | update | replace | delete | forget | no-op
    fields: list[str] = field(default_factory=list)
    property: str | None = None
    reason: str | None = None
    layer: int = 0

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resource": self.resource, "type": self.type, "action": self.action,
                               "layer": self.layer}
        if self.fields:
            out["fields"] = self.fields
        if self.property is not None:
            out["property"] = self.property
        if self.reason is not None:
            out["reason"] = self.reason
        return out


@dataclass
class Result:
    changes: list[Change]
    outputs: dict[str, Any]
    problems: list[dict[str, str]]

    @property
    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for change in self.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        return counts


def parse(source: str | Mapping[str, Any]) -> template.Template:
    """The template, checked against the installed resource types (``TemplateError`` with every problem)."""
    return template.parse(source, resource_types=list(resource_types()))


has_unknown = functions.has_unknown  # used by the apply workflow too


def physical(value: str | None) -> Any:
    """A physical id as ``get_resource`` gives it: an integer when it is one (systems, profiles...)."""
    return int(value) if value is not None and value.isdigit() else value


def context(params: Mapping[str, Any], conditions: Mapping[str, bool], records: Mapping[str, StackResource],
            unknown: set[str]) -> functions.Context:
    """The function context of a stack: ids and attributes from the records, unknown for the resources
    in ``unknown`` (being made or remade) and for those without a record."""

    def resource_id(name: str) -> Any:
        record = records.get(name)
        if record is None or name in unknown or record.physical_id is None:
            return functions.UNKNOWN
        return physical(record.physical_id)

    def attribute(name: str, path: tuple) -> Any:
        record = records.get(name)
        if record is None or name in unknown or record.status != ResourceStatus.COMPLETE:
            return functions.UNKNOWN
        value: Any = record.attributes or {}
        for step in path:
            if isinstance(value, Mapping):
                value = value.get(step if not isinstance(step, int) else str(step), value.get(step))
            elif isinstance(value, list) and isinstance(step, int | str) and str(step).lstrip("-").isdigit():
                index = int(step)
                value = value[index] if -len(value) <= index < len(value) else None
            else:
                return None
        return value

    return functions.Context(params=dict(params), conditions=dict(conditions), resource_id=resource_id,
                             attribute=attribute)


def decide(resource: Any, props: dict[str, Any], record: StackResource | None, layer: int = 0) -> Change:
    """What to do with one resource of the template, given its resolved properties and its record."""
    types = resource_types()
    kind = types[resource.type]
    change = Change(resource.name, resource.type, "no-op", layer=layer)
    if record is None or (record.physical_id is None and record.status != ResourceStatus.COMPLETE):
        if resource.external_id:
            change.action, change.reason = "adopt", f"adopt existing {resource.external_id}"
        else:
            change.action = "create"
            if record is not None:
                change.reason = "the last create did not finish: it is resumed"
        return change
    if record.type != resource.type:
        change.action, change.property = "replace", "type"
        change.reason = f"the resource type changed from {record.type}"
        return change
    if record.status != ResourceStatus.COMPLETE and record.action in ("create", "replace"):
        change.action, change.reason = record.action, f"the last {record.action} did not finish: it is resumed"
        return change
    drift = record.drift or {}
    if drift.get("state") in ("missing", "stopped"):
        change.action, change.property = "replace", "(drift)"
        change.reason = f"drift: {drift.get('detail') or drift['state']}"
        return change
    changed = changed_paths(record.properties or {}, props)
    if changed:
        replacement = kind.replacement(changed)
        change.fields = changed
        if replacement is not None:
            change.action, change.property, change.reason = "replace", replacement.property, replacement.reason
        else:
            change.action = "update"
        return change
    if drift.get("differing"):
        change.action, change.fields = "update", sorted(drift["differing"])
        change.reason = "drift: properties differ from the template"
    return change


def compute(tmpl: template.Template, params: Mapping[str, Any], records: Mapping[str, StackResource]) -> Result:
    """The whole plan. ``params`` are bound (defaults applied), hidden ones included."""
    types = resource_types()
    conditions = functions.evaluate_conditions(tmpl, params)
    active = graph.active_resources(tmpl, conditions)
    unknown: set[str] = set()
    ctx = context(params, conditions, records, unknown)
    changes: list[Change] = []
    problems: list[dict[str, str]] = []
    for index, layer in enumerate(graph.layers(tmpl, conditions)):
        for name in layer:
            resource = active[name]
            props = functions.resolve(resource.properties or {}, ctx)
            if not has_unknown(props):
                problems += [{"path": f"resources.{name}.properties" + (f".{p}" if p else ""), "message": m}
                             for p, m in types[resource.type].validate(props)]
            change = decide(resource, props, records.get(name), index)
            if change.action in ("create", "replace", "adopt"):
                unknown.add(name)
            restricted = (resource.update_policy or {}).get("restricted") or []
            if change.action in ("replace", "update") and change.action in restricted:
                why = f"{change.property}: {change.reason}" if change.action == "replace" else ", ".join(change.fields)
                problems.append({"path": f"resources.{name}.update_policy.restricted",
                                 "message": f"{name} would be {change.action}d ({why}) but its update_policy "
                                            f"restricts {change.action}"})
            changes.append(change)
    changes += deletions(records, set(active))
    return Result(changes, outputs(tmpl, params, conditions, ctx), problems)


def deletions(records: Mapping[str, StackResource], keep: set[str]) -> list[Change]:
    """The records the template no longer has, dependents first (reverse dependency order)."""
    gone = {name: r for name, r in records.items() if name not in keep}
    return [Change(name, gone[name].type, "forget" if gone[name].deletion_policy == "retain" else "delete",
                   layer=-1 - i)
            for i, layer in enumerate(reverse_layers(gone, lambda r: r.depends_on or []))
            for name in layer]


def reverse_layers(records: Mapping[str, Any], deps: Callable[[Any], Iterable[str]]) -> list[list[str]]:
    """Layers for tearing down: a resource comes after every resource that depends on it."""
    dependents: dict[str, set[str]] = {name: set() for name in records}
    for name, record in records.items():
        for dep in deps(record):
            if dep in dependents:
                dependents[dep].add(name)
    left, layers = dict(dependents), []
    while left:
        ready = sorted(n for n, users in left.items() if not users & set(left))
        if not ready:  # a loop among recorded dependencies (cannot come from a valid template): all at once
            ready = sorted(left)
        layers.append(ready)
        for name in ready:
            del left[name]
    return layers


def outputs(tmpl: template.Template, params: Mapping[str, Any], conditions: Mapping[str, bool],
            ctx: functions.Context) -> dict[str, Any]:
    """The outputs' values (secret ones and hidden parameters redacted; unknown ones said so)."""
    secrets = parameters.secret_values(tmpl, params)
    out: dict[str, Any] = {}
    for name, output in tmpl.outputs.items():
        if output.condition and not conditions.get(output.condition, True):
            continue
        value = functions.resolve(output.value, ctx)
        if output.secret:
            value = REDACTED
        elif has_unknown(value):
            value = KNOWN_AFTER_APPLY
        else:
            value = parameters.redact(value, secrets)
        out[name] = value
    return out

"""The plan: what applying a template to a stack's recorded state would do, resource by resource.

Per resource, in dependency order: ``create`` (or ``adopt`` with ``external_id``), ``update`` in place
(the changed property paths), ``replace`` (the property forcing it and the type's reason, or the drift
found by ``check``; with ``replace_policy``: delete_before_create, or create_before_delete when the
template's ``update_policy`` asks for it and the type can hold the new one beside the old), ``delete``
(or ``forget`` with ``deletion_policy: retain``) for what the template no longer has, else ``no-op``;
plus the outputs it will have (``(known after apply)`` where they read what is not made yet). A failed
update or delete of a resource the template still has is made again. No side effects: plan reads the
template and the stack's records only. The apply workflow calls ``decide`` for each resource when its
layer starts, so apply and plan agree by construction, and a resumed apply decides again from what is
recorded.

create_before_delete: the apply records the old object apart, as a *deposed* record named
``<resource>~<apply job id>`` (``~`` never appears in a template's names), makes the new one under the
resource's name (dependents, resolved later, read the new one), and deletes the deposed records with what
the template no longer has, at the end of the apply. A deposed record left by an apply that stopped
early is a ``delete`` of every later plan.
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
CREATE_BEFORE_DELETE = "create_before_delete"
DEPOSED = "~"  # <resource>~<apply job id>: an object replaced create-before-delete, deleted at the end


@dataclass
class Change:
    resource: str
    type: str
    action: str  # create | adopt | update | replace | delete | forget | no-op
    fields: list[str] = field(default_factory=list)
    property: str | None = None
    reason: str | None = None
    layer: int = 0
    replace_policy: str | None = None  # replace only: delete_before_create | create_before_delete

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resource": self.resource, "type": self.type, "action": self.action,
                               "layer": self.layer}
        if self.fields:
            out["fields"] = self.fields
        if self.property is not None:
            out["property"] = self.property
        if self.reason is not None:
            out["reason"] = self.reason
        if self.replace_policy is not None:
            out["replace_policy"] = self.replace_policy
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


def deposed_name(name: str, job_id: int, undone: bool = False) -> str:
    """The record of an object set apart by apply job ``job_id``: the old one of a create-before-delete
    replacement, or (``undone``) the new one its rollback gave up for the old one again."""
    return f"{name}{DEPOSED}{job_id}" + (".rollback" if undone else "")


def is_deposed(name: str) -> bool:
    return DEPOSED in name


def decide(resource: Any, props: dict[str, Any], record: StackResource | None, layer: int = 0) -> Change:
    """What to do with one resource of the template, given its resolved properties and its record."""
    change = _decide(resource, props, record, layer)
    if change.action == "replace":
        change.replace_policy = resource.update_policy["replace"]
    return change


def create_before_delete_problem(resource: Any, props: dict[str, Any], record: StackResource | None,
                                 change: Change) -> str | None:
    """Why this replacement cannot make the new object beside the old one (the type says: a fixed
    hostname, a fixed address...), or None. Only for a replace whose policy is create_before_delete and
    whose old object exists (a resumed one already holds its new object)."""
    if change.action != "replace" or change.replace_policy != CREATE_BEFORE_DELETE or record is None \
            or record.physical_id is None:
        return None
    return resource_types()[resource.type].create_before_delete(props, record)


def _decide(resource: Any, props: dict[str, Any], record: StackResource | None, layer: int) -> Change:
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
    if record.status == ResourceStatus.FAILED and record.action in ("update", "delete") and not changed:
        # what the failed action left is not known: an update is made again, a half-deleted one remade
        again = "update" if record.action == "update" else "replace"
        change.action, change.reason = again, f"the last {record.action} failed: it is made again"
        if again == "replace":
            change.property = "(failed delete)"
        return change
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
            why_not = create_before_delete_problem(resource, props, records.get(name), change)
            if why_not is not None:
                problems.append({"path": f"resources.{name}.update_policy.replace",
                                 "message": f"{name} would be replaced ({change.property}: {change.reason}) "
                                            f"create_before_delete, which cannot be done: {why_not}; use "
                                            "replace: delete_before_create"})
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
                   layer=-1 - i, reason=_deposed_reason(name) if is_deposed(name) else None)
            for i, layer in enumerate(reverse_layers(gone, lambda r: r.depends_on or []))
            for name in layer]


def _deposed_reason(name: str) -> str:
    resource, _, suffix = name.rpartition(DEPOSED)
    job, _, undone = suffix.partition(".")
    if undone:
        return f"the new {resource} of job {job}, given up by its rollback"
    return f"the old {resource}, replaced create-before-delete by job {job}"


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

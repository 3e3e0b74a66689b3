"""The dependency graph of a template's resources: which are active, in what order to make them, in what
order to remove them, and cycles (issue 19). Pure.

An edge ``a -> b`` means ``a`` depends on ``b`` (``b`` is made first, removed last). Edges come from
``Resource.depends_on`` (explicit ``depends_on`` plus what ``get_resource``/``get_attr`` imply). A resource whose
condition is false is not part of the stack; edges to it are dropped (its ``get_resource`` is then for the
runtime to answer, as null in Heat).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from armillary.stacks.model import Output, Resource, Template, TemplateError


def is_active(item: Resource | Output, conditions: Mapping[str, bool]) -> bool:
    """Whether a resource or output is part of the stack under ``conditions`` (no condition: always)."""
    return item.condition is None or bool(conditions[item.condition])


def active_resources(template: Template, conditions: Mapping[str, bool]) -> dict[str, Resource]:
    """The resources whose condition holds, in template order."""
    return {name: r for name, r in template.resources.items() if is_active(r, conditions)}


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle in ``edges`` as ``[a, b, c, a]`` (``a -> b -> c -> a``), or None. Deterministic: nodes are
    visited in sorted order; targets that are not keys have no edges."""
    graph = {node: sorted(set(targets)) for node, targets in edges.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path: list[str] = [start]
        iterators = [iter(graph[start])]
        state[start] = 1
        while iterators:
            nxt = next(iterators[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iterators.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iterators.append(iter(graph.get(nxt, ())))
    return None


def layers(template: Template, conditions: Mapping[str, bool] | None = None) -> list[list[str]]:
    """The active resources in topological layers, each sorted by name: layer 0 depends on nothing, layer
    n only on earlier layers. With ``conditions`` None every resource is active."""
    active = template.resources if conditions is None else active_resources(template, conditions)
    waiting = {name: {d for d in r.depends_on if d in active} for name, r in active.items()}
    users: dict[str, list[str]] = {name: [] for name in active}
    for name, deps in waiting.items():
        for dep in deps:
            users[dep].append(name)
    ready = sorted(name for name, deps in waiting.items() if not deps)
    result: list[list[str]] = []
    placed = 0
    while ready:
        result.append(ready)
        placed += len(ready)
        following: list[str] = []
        for name in ready:
            for user in users[name]:
                waiting[user].discard(name)
                if not waiting[user]:
                    following.append(user)
        ready = sorted(following)
    if placed < len(active):
        cycle = find_cycle({n: d for n, d in waiting.items() if d}) or []
        raise TemplateError.one("resources", "dependency cycle: " + " -> ".join(cycle))
    return result


def dependents(template: Template) -> dict[str, set[str]]:
    """For each resource, the resources that depend on it (the reverse edges, for delete order)."""
    result: dict[str, set[str]] = {name: set() for name in template.resources}
    for name, resource in template.resources.items():
        for dep in resource.depends_on:
            result.setdefault(dep, set()).add(name)
    return result


def delete_layers(template: Template, conditions: Mapping[str, bool] | None = None) -> list[list[str]]:
    """``layers`` reversed: the resources that nothing left depends on come first."""
    return list(reversed(layers(template, conditions)))

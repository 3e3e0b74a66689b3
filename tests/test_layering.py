"""The package's shape, read from its source: no import loops, no import from a lower layer to a higher
one, no router importing another router, no module reaching into another module's private names.

The layers are those of ARCHITECTURE.md ("Dependencies point inward"); a new top-level part of the
package must be given its layer in ``LAYERS`` (the test fails on a part it does not know). Imports
inside functions count (a deferred import is still a dependency); imports under ``if TYPE_CHECKING:``
do not (they never run).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = "armillary"
ROOT = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# Lower numbers are further in; a module may import its own layer and the ones below it.
LAYERS = {
    "failures": 0, "redaction": 0, "logs": 0, "plugins": 0, "tracing": 0, "metrics": 0, "__init__": 0,
    "domain": 1,
    "drivers": 2, "provisioners": 2, "remote": 2, "sources": 2, "auth": 2, "config": 2,
    "engine": 3,
    "workflows": 4, "network": 4, "clusters": 4, "stacks": 4, "audits": 4, "notify": 4,
    "api": 6, "cli": 6, "web": 6, "chat": 6, "__main__": 6, "migrations": 6,
}
# Parts of one layer that still must not import each other.
FORBIDDEN_PEERS = {("domain", "drivers"), ("drivers", "provisioners"), ("remote", "drivers"),
                   ("remote", "provisioners"), ("sources", "drivers"), ("sources", "provisioners")}


def module_files() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = module_files()


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, except what sits under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            yield from (n for child in node.orelse for n in [child, *_walk(child)])
            continue
        yield node
        yield from _walk(node)


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_package = MODULES[module].name == "__init__.py"
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import of ``module`` inside the package."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in MODULES:
                    yield submodule, [], node.lineno
                else:
                    yield target, [alias.name], node.lineno


def graph() -> dict[str, dict[str, int]]:
    edges: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for module in MODULES:
        for target, _, line in imports_of(module):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != module and target in MODULES:
                edges[module].setdefault(target, line)
    return edges


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def strongly_connected(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the import loops are the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    loops: list[list[str]] = []
    counter = 0
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    loops.append(sorted(component))
    return loops


def is_router(module: str) -> bool:
    """A module that defines a router at its top level (``router = APIRouter(...)``)."""
    if not module.startswith(f"{PACKAGE}.api."):
        return False
    return re.search(r"^\w*router = APIRouter\(", MODULES[module].read_text(encoding="utf-8"), re.M) is not None


# ---------------------------------------------------------------- the tests


def test_every_part_of_the_package_has_a_layer() -> None:
    unknown = sorted({part_of(m) for m in MODULES} - set(LAYERS))
    assert unknown == [], f"give these parts a layer in LAYERS: {unknown}"


def test_no_import_loops() -> None:
    loops = strongly_connected(graph())
    assert loops == [], "import loops:\n" + "\n".join(" <-> ".join(loop) for loop in loops)


def test_imports_point_inward() -> None:
    wrong = []
    for module, targets in graph().items():
        here = part_of(module)
        for target, line in targets.items():
            there = part_of(target)
            if LAYERS.get(there, 0) > LAYERS.get(here, 0) or (here, there) in FORBIDDEN_PEERS:
                wrong.append(f"{module}:{line} imports {target} ({here} may not depend on {there})")
    assert wrong == [], "imports against the layering:\n" + "\n".join(sorted(wrong))


def test_routers_are_peers() -> None:
    wrong = [f"{module}:{line} imports the router {target}"
             for module, targets in graph().items() if is_router(module)
             for target, line in targets.items() if target != module and is_router(target)]
    assert wrong == [], "routers importing routers:\n" + "\n".join(sorted(wrong))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_takes_another_modules_private_names() -> None:
    wrong = []
    for module in MODULES:
        tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
        aliases = {}
        for target, names, line in imports_of(module):
            wrong += [f"{module}:{line} imports {target}.{n}" for n in names if _private(n) and target != module]
        for node in _walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    full = alias.name if isinstance(node, ast.Import) else f"{_resolve(module, node)}.{alias.name}"
                    if full in MODULES and full != module:
                        aliases[alias.asname or alias.name.split(".")[-1]] = full
        for node in _walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and _private(node.attr)):
                wrong.append(f"{module}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert wrong == [], "private names used across modules:\n" + "\n".join(sorted(set(wrong)))


@pytest.mark.parametrize("module", ["armillary.failures"])
def test_the_bottom_imports_nothing_of_the_package(module: str) -> None:
    assert list(imports_of(module)) == []

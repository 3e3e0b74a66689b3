"""Bounds on free-form JSON values: how deep they nest and how much they hold.

Every free-form value the API stores (variables, driver properties, hypervisor settings, type specs,
action parameters) goes through ``bounded``, so no route can store a value that later breaks reading
it back (a 300-deep variable made every listing of its environment fail), and one variable cannot
hold megabytes. Request bodies as a whole are bounded earlier, by the body guard of the API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# A stored value nests at most this deep (a mapping of lists of mappings... counts each level).
MAX_STORED_DEPTH = 16
# One stored document (a system's variables, a type's spec...) serialises to at most this many bytes.
MAX_STORED_BYTES = 1024 * 1024
# One variable's value serialises to at most this many bytes (a certificate chain fits; a disk image does not).
MAX_VARIABLE_BYTES = 256 * 1024


class TooDeep(ValueError):
    pass


def depth_and_nodes(value: Any, max_depth: int) -> tuple[int, int]:
    """How deep ``value`` nests and how many values it holds; ``TooDeep`` past ``max_depth``.

    Iterative, so a hostile document cannot exhaust the interpreter's stack while being measured."""
    deepest, nodes = 0, 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise TooDeep(f"nested more than {max_depth} levels deep")
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest, nodes


def check_value(value: Any, *, max_depth: int = MAX_STORED_DEPTH, max_bytes: int = MAX_STORED_BYTES) -> Any:
    """``value`` unchanged, or ``ValueError`` saying which bound it breaks (pydantic reports it on the field)."""
    depth_and_nodes(value, max_depth)
    size = len(json.dumps(value, default=str, separators=(",", ":")))
    if size > max_bytes:
        raise ValueError(f"too large: {size} bytes as JSON, at most {max_bytes}")
    return value


def bounded(max_depth: int = MAX_STORED_DEPTH, max_bytes: int = MAX_STORED_BYTES) -> Callable[[Any], Any]:
    """A pydantic ``AfterValidator`` body bounding a stored value."""
    return lambda value: check_value(value, max_depth=max_depth, max_bytes=max_bytes)


def check_variables(variables: dict[str, Any]) -> dict[str, Any]:
    """Variables: each value bounded on its own (so the error names the key), then the whole mapping."""
    for key, value in variables.items():
        try:
            check_value(value, max_depth=MAX_STORED_DEPTH - 1, max_bytes=MAX_VARIABLE_BYTES)
        except ValueError as exc:
            raise ValueError(f"variable {key!r}: {exc}") from None
    return check_value(variables)

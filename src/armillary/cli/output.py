"""How client commands print: a rich table for people, the raw API objects as JSON or YAML for scripts.

Rules every command follows:

* ``table`` (default) prints a table on stdout: one row per item for lists, one row per field for a
  single object.
* ``json`` and ``yaml`` print exactly what the API returned (a list's page is ``{"items": [...],
  "next": ...}``; with ``--all`` every page's items in one page whose ``next`` is null), and nothing
  else on stdout; notes and progress go to stderr so the output can be piped into ``jq`` or ``yq``.
* Errors always go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


Column = tuple[str, Callable[[dict[str, Any]], Any]]

stdout = Console(highlight=False, soft_wrap=False)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def dump(data: Any, fmt: OutputFormat) -> None:
    """Print ``data`` as JSON or YAML on stdout, unchanged."""
    if fmt is OutputFormat.yaml:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False)
    else:
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    sys.stdout.write(text)
    sys.stdout.flush()


def note(message: str, fmt: OutputFormat) -> None:
    """A human message: on stdout for tables, on stderr when stdout carries JSON/YAML."""
    (stdout if fmt is OutputFormat.table else stderr).print(Text(message))


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"id", "name"}


def cell(value: Any, compact: bool = True) -> str:
    """One value as text: refs by name, mappings as k=v (or YAML lines when not compact)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if is_ref(value):
        return str(value["name"])
    if isinstance(value, dict):
        if not value:
            return "-"
        if compact or any(isinstance(v, (dict, list)) for v in value.values()):
            if compact:
                return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items())
            return yaml.safe_dump(
                value, sort_keys=False, allow_unicode=True, default_flow_style=False
            ).rstrip()
        return "\n".join(f"{k}: {_scalar(v)}" for k, v in value.items())
    if isinstance(value, list):
        if not value:
            return "-"
        if all(not isinstance(v, (dict, list)) for v in value):
            return ", ".join(_scalar(v) for v in value)
        return json.dumps(value) if compact else yaml.safe_dump(value, sort_keys=False).rstrip()
    return str(value)


def _scalar(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def print_object(obj: Any, fmt: OutputFormat, skip: Sequence[str] = ()) -> None:
    """One API object: raw for json/yaml, a field/value table otherwise."""
    if fmt is not OutputFormat.table:
        dump(obj, fmt)
        return
    if not isinstance(obj, dict):
        stdout.print(Text(cell(obj, compact=False)))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in obj.items():
        if key in skip:
            continue
        if is_ref(value):
            table.add_row(key, Text(f"{value['name']} (id {value['id']})"))
        else:
            table.add_row(key, Text(cell(value, compact=False)))
    stdout.print(table)


def print_items(
    items: list[dict[str, Any]],
    columns: Sequence[Column],
    fmt: OutputFormat,
    page: Any = None,
    empty: str = "",
) -> None:
    """A list: ``page`` (the API's own object) for json/yaml, a table of ``columns`` otherwise."""
    if fmt is not OutputFormat.table:
        dump(page if page is not None else items, fmt)
        return
    if not items:
        if empty:
            stderr.print(Text(empty))
        return
    table = Table(show_edge=False, box=None, header_style="bold", pad_edge=False)
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for item in items:
        table.add_row(*(Text(cell(get(item))) for _, get in columns))
    stdout.print(table)


def value_cell(value: Any) -> str:
    """A variable's value as JSON would spell it (true, null, [1, 2]), strings as they are."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def field(name: str) -> Callable[[dict[str, Any]], Any]:
    """A column getter for a dotted path (``machine.cpu``, ``environment``)."""
    parts = name.split(".")

    def get(item: dict[str, Any]) -> Any:
        value: Any = item
        for part in parts:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    return get

"""The parts of a stack template every other stacks module shares: its dataclasses, the error that lists
every problem, and the path helper. Apart from ``template`` so that ``parameters`` and ``graph``, which
``template`` uses while parsing, need not import ``template`` back (no import loop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Pseudo parameters Heat provides; ``get_param`` of these needs no declaration (see parameters.bind_parameters).
PSEUDO_PARAMETERS: tuple[str, ...] = ("OS::stack_name", "OS::stack_id", "OS::project_id")
PARAMETER_KEYS = ("type", "label", "description", "default", "hidden", "constraints", "immutable", "tags")
PARAMETER_TYPES = ("string", "number", "boolean", "json", "comma_delimited_list")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a template: where (``resources.web.properties.image``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class TemplateError(ValueError):
    """Every problem found in a template (or in binding its parameters, or at evaluation)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def one(cls, path: str, message: str) -> TemplateError:
        return cls([Problem(path, message)])


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # string | number | boolean | json | comma_delimited_list
    default: Any  # None: no default (the parameter is required), as in Heat
    description: str
    hidden: bool
    constraints: tuple[dict, ...]
    label: str | None
    immutable: bool = False


@dataclass(frozen=True)
class Resource:
    name: str
    type: str
    properties: Any  # raw: may hold function calls
    depends_on: tuple[str, ...]  # explicit plus implied by get_resource/get_attr, sorted
    explicit_depends_on: tuple[str, ...]
    condition: Any | None  # a condition name (inline expressions get a synthetic one), or None: always
    deletion_policy: str  # delete | retain
    update_policy: dict  # {"replace": delete_before_create (default) | create_before_delete, "restricted": [...]}
    external_id: Any | None
    metadata: dict


@dataclass(frozen=True)
class Output:
    name: str
    value: Any
    description: str
    condition: Any | None
    secret: bool  # declared ``secret: true``, or its value uses a hidden parameter


@dataclass(frozen=True)
class Template:
    version: str  # "1" for armillary_template_version 1; the HOT date (names mapped to dates) for HOT
    description: str
    parameters: dict[str, Parameter]
    resources: dict[str, Resource]
    outputs: dict[str, Output]
    conditions: dict[str, Any]  # name -> expression (plus synthetic "@resources.X"/"@outputs.X" ones)
    raw: dict = field(repr=False)


def join(path: str, key: Any) -> str:
    """``path`` extended by a mapping key or (for an int) a list index."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)

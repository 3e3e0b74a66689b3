"""Intrinsic functions: evaluating template values (issue 19). Pure: what a function reads from the stack
comes through the ``Context`` callbacks.

Semantics are HOT's (the user reference is ``docs/stacks-templates.md``), with these decisions:

- ``UNKNOWN`` stands for a value known only after apply (the id of a resource still to be made, its
  attributes). A function whose input holds ``UNKNOWN`` gives ``UNKNOWN`` — except ``if``, which only evaluates
  the branch taken, and ``and``/``or``, which use three-valued logic (``false and UNKNOWN`` is false,
  ``true or UNKNOWN`` is true). Plain data keeps an ``UNKNOWN`` where it sits (``{a: UNKNOWN, b: 1}``), so a
  plan can say which property is unknown.
- ``get_attr`` calls ``Context.attribute(resource, (attribute,))`` and applies the rest of the path itself;
  ``get_param``/``get_attr`` paths index mappings by key and lists by index. A path through null gives null
  (an attribute not set yet); a missing key or an index out of range is an error with its path.
- ``equals`` never takes a boolean for a number (``equals: [1, true]`` is false, unlike Python).
- ``repeat``: the template is evaluated first, then each placeholder is replaced in every string (keys too);
  a string that is exactly a placeholder becomes the value itself (so numbers and mappings keep their type).
- Values joined into text (``list_join``, ``str_replace``, ``repeat`` inside a string): strings as they are,
  null as "", booleans as true/false, numbers as written, mappings and lists as JSON.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Self

from armillary.stacks.template import (
    PSEUDO_PARAMETERS,
    SUPPORTED_FUNCTIONS,
    TemplateError,
    function_name,
    join,
    references,
)

if TYPE_CHECKING:
    from armillary.stacks.template import Template

__all__ = ["SUPPORTED_FUNCTIONS", "UNKNOWN", "Context", "evaluate_conditions", "has_unknown", "references", "resolve"]


class _Unknown:
    """The one "known after apply" marker (copies and pickles stay the same object)."""

    _instance: _Unknown | None = None

    def __new__(cls) -> Self:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "<known after apply>"

    def __copy__(self) -> _Unknown:
        return self

    def __deepcopy__(self, memo: dict) -> _Unknown:
        return self

    def __reduce__(self) -> tuple:
        return (_Unknown, ())


UNKNOWN: Final = _Unknown()
MAX_REPEAT = 10_000  # items one repeat may make: every combination of three lists of 1,000 would be 10⁹


def _unknown_id(name: str) -> Any:
    return UNKNOWN


def _unknown_attribute(name: str, path: tuple[Any, ...]) -> Any:
    return UNKNOWN


@dataclass(frozen=True)
class Context:
    """What functions read: bound parameters, evaluated conditions, and the stack's resources.

    ``resource_id(name)`` is what ``get_resource`` gives (the physical id, or UNKNOWN);
    ``attribute(name, (attribute,))`` is the attribute's value (or UNKNOWN) — the rest of a ``get_attr``
    path is applied by ``resolve``. The defaults know nothing about resources (validation, previews).
    """

    params: Mapping[str, Any]
    conditions: Mapping[str, bool]
    resource_id: Callable[[str], Any] = field(default=_unknown_id)
    attribute: Callable[[str, tuple[Any, ...]], Any] = field(default=_unknown_attribute)


def has_unknown(value: Any) -> bool:
    """Whether ``value`` holds ``UNKNOWN`` anywhere."""
    if value is UNKNOWN:
        return True
    if isinstance(value, dict):
        return any(has_unknown(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_unknown(v) for v in value)
    return False


def resolve(value: Any, ctx: Context, path: str = "") -> Any:
    """``value`` with every function call evaluated (recursively); ``path`` prefixes error paths."""
    if isinstance(value, dict):
        if len(value) == 1:
            name = function_name(value)
            if name is not None:
                handler = _HANDLERS.get(name)
                if handler is None:
                    raise TemplateError.one(join(path, name), f"unknown function {name!r}; supported "
                                                              f"functions: {', '.join(SUPPORTED_FUNCTIONS)}")
                return handler(value[name], ctx, join(path, name))
        return {k: resolve(v, ctx, join(path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, ctx, join(path, i)) for i, v in enumerate(value)]
    return value


def evaluate_conditions(template: Template, params: Mapping[str, Any]) -> dict[str, bool]:
    """Every condition of ``template`` (named and the synthetic ones of inline expressions) with ``params``."""
    lazy = _Conditions(template.conditions, params)
    return {name: lazy[name] for name in template.conditions}


class _Conditions(Mapping[str, bool]):
    """Conditions evaluated on first use, so one may name another in any order."""

    def __init__(self, expressions: Mapping[str, Any], params: Mapping[str, Any]) -> None:
        self.expressions = expressions
        self.known: dict[str, bool] = {}
        self.busy: list[str] = []
        self.ctx = Context(params=params, conditions=self)

    def __getitem__(self, name: str) -> bool:
        if name in self.known:
            return self.known[name]
        if name not in self.expressions:
            raise KeyError(name)
        if name in self.busy:
            cycle = self.busy[self.busy.index(name):] + [name]
            raise TemplateError.one(join("conditions", name), "conditions refer to each other in a cycle: "
                                    + " -> ".join(cycle))
        self.busy.append(name)
        try:
            value = _truth(self.expressions[name], self.ctx, _condition_path(name))
        finally:
            self.busy.pop()
        if value is UNKNOWN:
            raise TemplateError.one(_condition_path(name), "a condition must be known before apply")
        self.known[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self.expressions)

    def __len__(self) -> int:
        return len(self.expressions)


def _condition_path(name: str) -> str:
    return name[1:] + ".condition" if name.startswith("@") else join("conditions", name)


def _truth(value: Any, ctx: Context, path: str) -> Any:
    """A condition operand's value: True, False or UNKNOWN (a name is looked up in ``ctx.conditions``)."""
    if isinstance(value, str):
        try:
            return ctx.conditions[value]
        except KeyError:
            raise TemplateError.one(path, f"unknown condition {value!r}") from None
    if isinstance(value, bool):
        return value
    result = resolve(value, ctx, path)
    if result is UNKNOWN or isinstance(result, bool):
        return result
    raise TemplateError.one(path, f"a condition must give true or false, not {_show(result)}")


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def text(value: Any) -> str:
    """A value as text when it is joined or substituted into a string (see the module docstring)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, default=repr)


def index(value: Any, keys: list[Any], path: str) -> Any:
    """``value[k0][k1]...``: mappings by key, lists by (integer or digit-string) index."""
    for key in keys:
        if value is UNKNOWN or value is None:
            return value
        if isinstance(value, Mapping):
            if key in value:
                value = value[key]
            elif isinstance(key, int) and str(key) in value:
                value = value[str(key)]
            else:
                raise TemplateError.one(path, f"no key {key!r} (keys: {', '.join(map(str, list(value)[:20]))})")
        elif isinstance(value, list | tuple):
            try:
                position = int(key)
            except (TypeError, ValueError):
                raise TemplateError.one(path, f"a list is indexed by an integer, not {key!r}") from None
            if not -len(value) <= position < len(value):
                raise TemplateError.one(path, f"index {position} out of range (the list has {len(value)} items)")
            value = value[position]
        else:
            raise TemplateError.one(path, f"cannot look up {key!r} in {_show(value)}")
    return value


def _get_param(arg: Any, ctx: Context, path: str) -> Any:
    items = arg if isinstance(arg, list) else [arg]
    if not items or not isinstance(items[0], str):
        raise TemplateError.one(path, "get_param takes a parameter name, or [name, key or index, ...]")
    name = items[0]
    if name not in ctx.params:
        if name in PSEUDO_PARAMETERS:
            return UNKNOWN
        raise TemplateError.one(path, f"parameter {name!r} has no value")
    keys = [resolve(k, ctx, join(path, i)) for i, k in enumerate(items[1:], start=1)]
    if any(k is UNKNOWN for k in keys):
        return UNKNOWN
    return index(ctx.params[name], keys, path)


def _get_resource(arg: Any, ctx: Context, path: str) -> Any:
    if not isinstance(arg, str):
        raise TemplateError.one(path, "get_resource takes a resource name")
    return ctx.resource_id(arg)


def _get_attr(arg: Any, ctx: Context, path: str) -> Any:
    if not isinstance(arg, list) or len(arg) < 2 or not isinstance(arg[0], str):
        raise TemplateError.one(path, "get_attr takes [resource name, attribute, key or index, ...]")
    keys = [resolve(k, ctx, join(path, i)) for i, k in enumerate(arg[1:], start=1)]
    if any(k is UNKNOWN for k in keys):
        return UNKNOWN
    value = ctx.attribute(arg[0], (keys[0],))
    return index(value, keys[1:], path)


def _list_join(arg: Any, ctx: Context, path: str) -> Any:
    if not isinstance(arg, list) or len(arg) < 2:
        raise TemplateError.one(path, "list_join takes [delimiter, list, ...]")
    parts = [resolve(item, ctx, join(path, i)) for i, item in enumerate(arg)]
    if has_unknown(parts):
        return UNKNOWN
    delimiter, lists = parts[0], parts[1:]
    if not isinstance(delimiter, str):
        raise TemplateError.one(join(path, 0), "the delimiter is a string")
    items: list[str] = []
    for i, one in enumerate(lists, start=1):
        if not isinstance(one, list):
            raise TemplateError.one(join(path, i), f"list_join joins lists, not {_show(one)}")
        items.extend(text(item) for item in one)
    return delimiter.join(items)


@lru_cache(maxsize=512)
def _pattern(keys: tuple[str, ...]) -> re.Pattern[str]:
    """One alternation, longest placeholder first, so no placeholder eats part of a longer one and no
    replacement is itself replaced again."""
    return re.compile("|".join(re.escape(k) for k in sorted(keys, key=lambda k: (-len(k), k))))


def substitute(template: str, replacements: Mapping[str, str]) -> str:
    """``template`` with each placeholder replaced by its text, in one pass."""
    keys = tuple(k for k in replacements if k)
    if not keys:
        return template
    return _pattern(keys).sub(lambda m: replacements[m.group(0)], template)


def _str_replace(arg: Any, ctx: Context, path: str) -> Any:
    if not isinstance(arg, dict) or set(arg) != {"template", "params"}:
        raise TemplateError.one(path, "str_replace takes {template: string, params: {placeholder: value, ...}}")
    template = resolve(arg["template"], ctx, join(path, "template"))
    params = resolve(arg["params"], ctx, join(path, "params"))
    if template is UNKNOWN or has_unknown(params):
        return UNKNOWN
    if not isinstance(template, str):
        raise TemplateError.one(join(path, "template"), f"the template is a string, not {_show(template)}")
    if not isinstance(params, dict):
        raise TemplateError.one(join(path, "params"), f"params is a mapping, not {_show(params)}")
    return substitute(template, {text(k): text(v) for k, v in params.items()})


def _if(arg: Any, ctx: Context, path: str) -> Any:
    if not isinstance(arg, list) or len(arg) != 3:
        raise TemplateError.one(path, "if takes [condition, value if true, value if false]")
    taken = _truth(arg[0], ctx, join(path, 0))
    if taken is UNKNOWN:
        return UNKNOWN
    return resolve(arg[1], ctx, join(path, 1)) if taken else resolve(arg[2], ctx, join(path, 2))


def _equals(arg: Any, ctx: Context, path: str) -> Any:
    if not isinstance(arg, list) or len(arg) != 2:
        raise TemplateError.one(path, "equals takes [value, value]")
    a, b = (resolve(v, ctx, join(path, i)) for i, v in enumerate(arg))
    if has_unknown(a) or has_unknown(b):
        return UNKNOWN
    return _same(a, b)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _not(arg: Any, ctx: Context, path: str) -> Any:
    value = _truth(arg, ctx, path)
    return UNKNOWN if value is UNKNOWN else not value


def _and(arg: Any, ctx: Context, path: str, name: str = "and") -> Any:
    if not isinstance(arg, list) or len(arg) < 2:
        raise TemplateError.one(path, f"{name} takes a list of at least two conditions")
    decisive = name == "or"  # the value that settles the result on its own
    values = [_truth(item, ctx, join(path, i)) for i, item in enumerate(arg)]
    if any(v is decisive for v in values):
        return decisive
    return UNKNOWN if any(v is UNKNOWN for v in values) else not decisive


def _or(arg: Any, ctx: Context, path: str) -> Any:
    return _and(arg, ctx, path, name="or")


def _repeat(arg: Any, ctx: Context, path: str) -> Any:
    if not isinstance(arg, dict) or not {"for_each", "template"} <= set(arg) \
            or not set(arg) <= {"for_each", "template", "permutations"}:
        raise TemplateError.one(path, "repeat takes {for_each: {placeholder: list, ...}, template: value, "
                                      "permutations: true|false}")
    for_each = arg["for_each"]
    if not isinstance(for_each, dict) or not for_each:
        raise TemplateError.one(join(path, "for_each"), "for_each is a non-empty mapping of placeholder: list")
    lists = {text(k): resolve(v, ctx, join(join(path, "for_each"), k)) for k, v in for_each.items()}
    template = resolve(arg["template"], ctx, join(path, "template"))
    if has_unknown(lists) or has_unknown(template):
        return UNKNOWN
    for key, values in lists.items():
        if not isinstance(values, list):
            raise TemplateError.one(join(join(path, "for_each"), key), f"repeat needs a list, not {_show(values)}")
    permutations = arg.get("permutations", True)
    if not isinstance(permutations, bool):
        raise TemplateError.one(join(path, "permutations"), "permutations is true or false")
    keys = list(lists)
    size = math.prod(len(v) for v in lists.values()) if permutations else len(next(iter(lists.values())))
    if size > MAX_REPEAT:
        raise TemplateError.one(path, f"repeat would make {size} items; at most {MAX_REPEAT}")
    if permutations:
        combos: Iterator[tuple[Any, ...]] = itertools.product(*lists.values())
    else:
        if len({len(v) for v in lists.values()}) > 1:
            raise TemplateError.one(join(path, "for_each"), "with permutations: false every list must have "
                                                            "the same length")
        combos = zip(*lists.values(), strict=True)
    return [_replace_in(template, dict(zip(keys, combo, strict=True))) for combo in combos]


def _replace_in(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        if value in values:
            return values[value]
        return substitute(value, {k: text(v) for k, v in values.items()})
    if isinstance(value, list):
        return [_replace_in(v, values) for v in value]
    if isinstance(value, dict):
        return {_replace_key(k, values): _replace_in(v, values) for k, v in value.items()}
    return value


def _replace_key(key: Any, values: Mapping[str, Any]) -> Any:
    return substitute(key, {k: text(v) for k, v in values.items()}) if isinstance(key, str) else key


_HANDLERS: dict[str, Callable[[Any, Context, str], Any]] = {
    "get_param": _get_param, "get_resource": _get_resource, "get_attr": _get_attr, "list_join": _list_join,
    "str_replace": _str_replace, "if": _if, "equals": _equals, "not": _not, "and": _and, "or": _or,
    "repeat": _repeat,
}
assert set(_HANDLERS) == set(SUPPORTED_FUNCTIONS)

"""Template parameters: declarations, binding values, constraints and secrets (issue 19). Pure.

Binding turns what a user supplies (often text, from a CLI or a form) into typed values:

- ``string``: text; numbers and booleans supplied are turned into text.
- ``number``: an int or a float; text like ``"3"`` or ``"2.5"`` is converted. Booleans are refused.
- ``boolean``: true/false; text ``true/false, yes/no, on/off, t/f, y/n, 1/0`` (any case) and the numbers 1/0.
- ``json``: a mapping or a list; text is parsed as JSON and must give one.
- ``comma_delimited_list``: a list of strings; text ``"a, b"`` is split on commas and each item stripped
  (``""`` is the empty list); the items of a list supplied are turned into text.

Constraints (each a mapping with one of these keys and an optional ``description`` that replaces the
generated message): ``allowed_values`` (string, number, comma_delimited_list: every item), ``range: {min,
max}`` (number, inclusive), ``length: {min, max}`` (string: characters, comma_delimited_list and json:
items), ``allowed_pattern`` (string: the WHOLE value must match, as in Heat), ``modulo: {step, offset}``
(number). A default is checked like a supplied value, when the template is parsed. The value of a ``hidden``
parameter never appears in a message.
"""

from __future__ import annotations

import json
import math
import re

import regex
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

from armillary.stacks.model import (
    PARAMETER_KEYS,
    PARAMETER_TYPES,
    PSEUDO_PARAMETERS,
    Parameter,
    Problem,
    Template,
    TemplateError,
    join,
)

# allowed_pattern: Python's regular expressions (as Heat's), through the `regex` module for its timeout
MAX_PATTERN = 1000
PATTERN_TIMEOUT_S = 0.05

REDACTED = "******"
TRUE_WORDS = frozenset({"true", "t", "yes", "y", "on", "1"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "off", "0"})
CONSTRAINTS: dict[str, tuple[str, ...]] = {  # constraint -> the parameter types it applies to
    "allowed_values": ("string", "number", "comma_delimited_list"),
    "range": ("number",),
    "length": ("string", "comma_delimited_list", "json"),
    "allowed_pattern": ("string",),
    "modulo": ("number",),
}


class _Invalid(ValueError):
    """A value that does not fit its parameter (the message never holds a hidden value)."""


# ------------------------------------------------------------------------------------ declarations


def declaration(name: str, decl: Any, problems: list[Problem]) -> Parameter | None:
    """The ``Parameter`` a template declares, problems appended to ``problems`` (None when unusable)."""
    path = join("parameters", name)
    if not isinstance(decl, dict):
        problems.append(Problem(path, "a parameter is a mapping with at least a type"))
        return None
    count = len(problems)
    for key in decl:
        if key not in PARAMETER_KEYS:
            problems.append(Problem(join(path, key), f"unknown parameter key; a parameter has "
                                                     f"{', '.join(PARAMETER_KEYS)}"))
    kind = decl.get("type")
    if kind not in PARAMETER_TYPES:
        problems.append(Problem(join(path, "type"), f"the type is one of {', '.join(PARAMETER_TYPES)}"))
        return None
    for key in ("description", "label"):
        if decl.get(key) is not None and not isinstance(decl[key], str):
            problems.append(Problem(join(path, key), f"the {key} is a string"))
    for key in ("hidden", "immutable"):
        if not isinstance(decl.get(key, False), bool):
            problems.append(Problem(join(path, key), f"{key} is true or false"))
    constraints = _constraints(kind, decl.get("constraints"), join(path, "constraints"), problems)
    if len(problems) > count:
        return None
    param = Parameter(name=name, type=kind, default=None, description=decl.get("description") or "",
                      hidden=bool(decl.get("hidden", False)), constraints=constraints, label=decl.get("label"),
                      immutable=bool(decl.get("immutable", False)))
    default = decl.get("default")
    if default is not None:
        try:
            default = check(param, default)
        except _Invalid as exc:
            problems.append(Problem(join(path, "default"), f"the default: {exc}"))
            return None
    return replace(param, default=default)


def _constraints(kind: str, value: Any, path: str, problems: list[Problem]) -> tuple[dict, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        problems.append(Problem(path, "constraints is a list"))
        return ()
    found: list[dict] = []
    for index, item in enumerate(value):
        where = join(path, index)
        keys = [k for k in item if k != "description"] if isinstance(item, dict) else []
        if len(keys) != 1 or keys[0] not in CONSTRAINTS:
            problems.append(Problem(where, f"a constraint has one of {', '.join(CONSTRAINTS)} (and an optional "
                                           "description)" + (" — custom_constraint is not supported"
                                                             if "custom_constraint" in keys else "")))
            continue
        key = keys[0]
        if kind not in CONSTRAINTS[key]:
            problems.append(Problem(join(where, key), f"{key} applies to {', '.join(CONSTRAINTS[key])} "
                                                      f"parameters, not {kind}"))
            continue
        message = _constraint_shape(key, item[key])
        if message:
            problems.append(Problem(join(where, key), message))
        elif item.get("description") is not None and not isinstance(item["description"], str):
            problems.append(Problem(join(where, "description"), "the description is a string"))
        else:
            found.append(dict(item))
    return tuple(found)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _constraint_shape(key: str, arg: Any) -> str | None:
    """What is wrong with a constraint's argument, or None."""
    if key == "allowed_values":
        return None if isinstance(arg, list) and arg else "allowed_values is a non-empty list"
    if key in ("range", "length"):
        if not isinstance(arg, dict) or not arg or not set(arg) <= {"min", "max"} \
                or not all(_number(v) for v in arg.values()):
            return f"{key} is {{min: number, max: number}} (one or both)"
        if "min" in arg and "max" in arg and arg["min"] > arg["max"]:
            return f"{key}: min is above max"
        return None
    if key == "modulo":
        if not isinstance(arg, dict) or set(arg) != {"step", "offset"} or not all(_number(v) for v in arg.values()) \
                or arg["step"] == 0 or abs(arg["offset"]) >= abs(arg["step"]):
            return "modulo is {step: number (not 0), offset: number (smaller than step)}"
        return None
    if not isinstance(arg, str):
        return "allowed_pattern is a regular expression (a string)"
    if len(arg) > MAX_PATTERN:
        return f"allowed_pattern is at most {MAX_PATTERN} characters"
    try:
        regex.compile(arg)
    except regex.error as exc:
        return f"allowed_pattern is not a valid regular expression: {exc}"
    return None


# ---------------------------------------------------------------------------------------- binding


def bind_parameters(template: Template, values: Mapping[str, Any], *, stack_name: str | None = None,
                    stack_id: str | None = None, project_id: str | None = None) -> dict[str, Any]:
    """Every declared parameter's value: supplied (coerced and checked) or its default.

    Unknown supplied names and required parameters without a value are errors; every problem is reported
    at once, with path ``parameters.NAME``. The pseudo parameters ``OS::stack_name``/``OS::stack_id``/
    ``OS::project_id`` are added when given (a ``get_param`` of a missing one is UNKNOWN at plan).
    """
    problems: list[Problem] = []
    for name in values:
        if name not in template.parameters:
            problems.append(Problem(join("parameters", name), "the template declares no such parameter"
                                    + (f" (declared: {', '.join(sorted(template.parameters))})"
                                       if template.parameters else "")))
    bound: dict[str, Any] = {}
    for name, param in template.parameters.items():
        value = values.get(name)
        if value is None:
            if param.default is None:
                problems.append(Problem(join("parameters", name), "required: the parameter has no default"))
            else:
                bound[name] = param.default
            continue
        try:
            bound[name] = check(param, value)
        except _Invalid as exc:
            problems.append(Problem(join("parameters", name), str(exc)))
    if problems:
        raise TemplateError(problems)
    for pseudo, value in zip(PSEUDO_PARAMETERS, (stack_name, stack_id, project_id), strict=True):
        if value is not None:
            bound[pseudo] = value
    return bound


def check(param: Parameter, value: Any) -> Any:
    """``value`` coerced to the parameter's type and checked against its constraints (``_Invalid``)."""
    value = coerce(param.type, value, param.hidden)
    for constraint in param.constraints:
        message = _violation(constraint, param, value)
        if message is not None:
            raise _Invalid(constraint.get("description") or message)
    return value


def coerce(kind: str, value: Any, hidden: bool = False) -> Any:
    """``value`` as a ``kind`` parameter value, by the rules in the module docstring."""
    shown = "the value" if hidden else _show(value)
    if kind == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if _number(value):
            return str(value)
        raise _Invalid(f"{shown} is not a string")
    if kind == "number":
        if _number(value):
            return value
        if isinstance(value, str):
            try:
                number: int | float = int(value.strip())
            except ValueError:
                try:
                    number = float(value.strip())
                except ValueError:
                    raise _Invalid(f"{shown} is not a number") from None
            if math.isfinite(number):
                return number
        raise _Invalid(f"{shown} is not a number")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower() if isinstance(value, str | int) else None
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise _Invalid(f"{shown} is not a boolean (true or false)")
    if kind == "json":
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise _Invalid(f"{'the value' if hidden else 'the text'} is not JSON: {exc.args[0]}") from None
        if isinstance(value, dict | list):
            return value
        raise _Invalid(f"{shown} is not a JSON mapping or list")
    if kind == "comma_delimited_list":
        if isinstance(value, str):
            return [item.strip() for item in value.split(",")] if value.strip() else []
        if isinstance(value, list) and all(isinstance(i, str) or _number(i) or isinstance(i, bool) for i in value):
            return [coerce("string", item) for item in value]
        raise _Invalid(f"{shown} is not a comma-delimited list")
    raise _Invalid(f"unknown parameter type {kind!r}")


def _violation(constraint: Mapping[str, Any], param: Parameter, value: Any) -> str | None:
    """The generated message when ``value`` breaks ``constraint``, or None."""
    shown = "the value" if param.hidden else _show(value)
    if "allowed_values" in constraint:
        allowed = constraint["allowed_values"]
        items = value if isinstance(value, list) else [value]
        bad = [i for i in items if not any(i == a and isinstance(i, bool) == isinstance(a, bool) for a in allowed)]
        if bad:
            what = "the value" if param.hidden else _show(bad[0] if isinstance(value, list) else value)
            return f"{what} is not one of the allowed values: {', '.join(map(_show, allowed))}"
        return None
    if "range" in constraint:
        return _bounds(constraint["range"], value, f"{shown} must be", "", "")
    if "length" in constraint:
        unit = " characters" if isinstance(value, str) else " items"
        return _bounds(constraint["length"], len(value), "the length must be", unit, f" (it is {len(value)})")
    if "modulo" in constraint:
        step, offset = constraint["modulo"]["step"], constraint["modulo"]["offset"]
        if value % step != offset % step:
            return f"{shown} is not {offset} modulo {step}"
        return None
    pattern = constraint["allowed_pattern"]
    try:  # a template's author writes the pattern, anyone with the stack's rights the value: bound the work
        matched = regex.fullmatch(pattern, value, timeout=PATTERN_TIMEOUT_S)
    except TimeoutError:
        return (f"{shown} took longer than {PATTERN_TIMEOUT_S * 1000:.0f} ms to match the pattern {pattern} "
                "(a pattern that backtracks this much needs rewriting)")
    if matched is None:
        return f"{shown} does not match the pattern {pattern}"
    return None


def _bounds(bounds: Mapping[str, Any], number: float, subject: str, unit: str, actual: str) -> str | None:
    low, high = bounds.get("min"), bounds.get("max")
    if (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            return f"{subject} between {low} and {high}{unit}{actual}"
        if low is not None:
            return f"{subject} at least {low}{unit}{actual}"
        return f"{subject} at most {high}{unit}{actual}"
    return None


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


# ----------------------------------------------------------------------------------------- secrets


def hidden_parameters(template: Template) -> frozenset[str]:
    """The names of the parameters declared ``hidden: true``."""
    return frozenset(name for name, param in template.parameters.items() if param.hidden)


def secret_values(template: Template, params: Mapping[str, Any]) -> list[str]:
    """The texts to redact for the hidden parameters' bound values (list items and JSON leaves too)."""
    found: list[str] = []
    for name in hidden_parameters(template):
        if name in params:
            found.extend(_texts(params[name]))
    return sorted(set(found), key=lambda s: (-len(s), s))


def _texts(value: Any) -> Iterable[str]:
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, str | int | float):
        yield str(value)
    elif isinstance(value, dict):
        yield json.dumps(value)
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        yield json.dumps(value)
        for item in value:
            yield from _texts(item)


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with every occurrence of a secret replaced by ``******``: whole values and inside any
    string (mapping keys too), recursively. Empty secrets are ignored (they would match everywhere);
    numbers given as secrets also redact equal numbers."""
    texts = sorted({str(s) for s in secrets if s is not None and not isinstance(s, bool) and str(s) != ""},
                   key=lambda s: (-len(s), s))
    if not texts:
        return value
    pattern = re.compile("|".join(re.escape(s) for s in texts))
    return _redact(value, pattern, frozenset(texts))


def _redact(value: Any, pattern: re.Pattern[str], texts: frozenset[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {_redact(k, pattern, texts): _redact(v, pattern, texts) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_redact(v, pattern, texts) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in texts:
        return REDACTED
    return value

"""Stack templates: reading and validating them (issue 19). Pure: no I/O, no database, no clock.

``parse`` turns YAML text (or an already-parsed mapping) into a ``Template`` and collects EVERY problem it
finds into one ``TemplateError`` (each with its path in the template), so a user fixes them all in one go.
This module is the static half of the language; ``functions`` evaluates, ``parameters`` binds values and
``graph`` orders resources. The user reference is ``docs/stacks-templates.md``.

Decisions, written down:

- YAML is parsed by libyaml and built into values by our own small constructor, which refuses duplicate keys
  (the last one silently winning hides mistakes), anchors/aliases and merge keys (``&a``/``*a``/``<<``: a
  few hundred bytes could expand into a tree of billions of nodes) and any tag beyond the plain JSON-like
  values (``!Ref``, ``!!binary``, ``!!set``...), and reads timestamps as strings as Heat does
  (``heat_template_version: 2016-10-14`` stays a string). JSON text is read by the json module.
- A function call is a mapping with exactly one key naming a function. A one-key mapping whose key is a HOT
  or CloudFormation function we do not support (``get_file``, ``map_merge``, ``Fn::Join``, ``Ref``...) is
  refused as an unknown function; any other one-key mapping is plain data.
- Paths are dotted, list items as ``[i]``: ``resources.web.properties.ports[0]``.
- Dependencies: ``depends_on`` plus every resource named by ``get_resource``/``get_attr`` in a resource's
  properties or metadata (both branches of an ``if``: the graph does not change with parameters).
- ``external_id`` is a literal id: the runtime adopts it as written (no functions there).
- Inline condition expressions (``condition: {equals: [...]}`` on a resource or output) are registered in
  ``Template.conditions`` under a synthetic name (``@resources.NAME`` / ``@outputs.NAME``) and the
  resource's or output's ``condition`` becomes that name: ``condition`` is always a name or None, so callers
  look it up in the mapping ``functions.evaluate_conditions`` returns. ``condition: true`` is None.
- Function availability does not depend on ``heat_template_version``: every version gets all our functions.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

import yaml

from armillary.stacks import graph, parameters
from armillary.stacks.model import (  # noqa: F401 - re-exported: the template's public names
    PARAMETER_KEYS,
    PARAMETER_TYPES,
    PSEUDO_PARAMETERS,
    Output,
    Parameter,
    Problem,
    Resource,
    Template,
    TemplateError,
    join,
)

SUPPORTED_FUNCTIONS: tuple[str, ...] = (
    "get_param", "get_resource", "get_attr", "list_join", "str_replace",
    "if", "equals", "not", "and", "or", "repeat",
)
# Functions allowed inside condition expressions (the ``conditions`` section, ``if``'s first argument,
# a resource's or output's ``condition``): they depend on parameters only, so conditions are known at plan.
CONDITION_FUNCTIONS: tuple[str, ...] = ("get_param", "equals", "not", "and", "or")
# Functions of HOT/CloudFormation we recognise in order to refuse them by name (a one-key mapping with one
# of these keys is an unsupported function, not data).
UNSUPPORTED_FUNCTIONS: frozenset[str] = frozenset({
    "get_file", "get_input", "digest", "map_merge", "map_replace", "yaql", "str_split", "resource_facade",
    "list_concat", "list_concat_unique", "contains", "filter", "make_url", "str_replace_strict",
    "str_replace_vstrict", "Ref", "Condition",
})

ARMILLARY_VERSIONS = (1,)
HOT_VERSIONS: dict[str, str] = {
    **{d: d for d in ("2013-05-23", "2014-10-16", "2015-04-30", "2015-10-15", "2016-04-08", "2016-10-14",
                      "2017-02-24", "2017-09-01", "2018-03-02", "2018-08-31", "2021-04-16")},
    "newton": "2016-10-14", "ocata": "2017-02-24", "pike": "2017-09-01", "queens": "2018-03-02",
    "rocky": "2018-08-31", "wallaby": "2021-04-16",
}
TOP_KEYS = ("heat_template_version", "armillary_template_version", "description", "parameter_groups",
            "parameters", "resources", "outputs", "conditions")
RESOURCE_KEYS = ("type", "properties", "metadata", "depends_on", "condition", "deletion_policy",
                 "update_policy", "external_id")
OUTPUT_KEYS = ("value", "description", "condition", "secret")
DELETION_POLICIES = {"delete": "delete", "Delete": "delete", "retain": "retain", "Retain": "retain"}
REPLACE_POLICIES = ("create_before_delete", "delete_before_create")
DEFAULT_REPLACE = "delete_before_create"  # the order of a replacement whose template names none
RESTRICTABLE = ("replace", "update")
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
CONDITION_KEY_PREFIX = "@"
TOO_DEEP = "the template is nested too deeply"


# --------------------------------------------------------------------------------------------- YAML


_TAG = "tag:yaml.org,2002:"
_PLAIN_SCALARS = frozenset(_TAG + t for t in ("int", "float", "bool", "null"))
_CONSTRUCTORS = yaml.constructor.SafeConstructor.yaml_constructors
_PARSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's C parser when present


def _refuse(message: str, node: yaml.Node) -> yaml.MarkedYAMLError:
    return yaml.constructor.ConstructorError(None, None, message, node.start_mark)


class _Builder:
    """Python values from a composed YAML node tree, by the rules in the module docstring.

    Our own small constructor rather than PyYAML's: it refuses what we refuse as it goes (aliases are
    nodes met twice, duplicate keys, merge keys, tags other than the plain JSON-like ones) and, with no
    generators or per-node bookkeeping, reads a large template in about half the time."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.seen: set[int] = set()

    def build(self, node: yaml.Node) -> Any:
        if id(node) in self.seen:
            raise _refuse("YAML anchors and aliases (&name, *name) are not supported", node)
        self.seen.add(id(node))
        tag = node.tag
        if tag == _TAG + "str" or tag == _TAG + "timestamp":  # dates stay text, as in Heat
            return node.value
        if tag == _TAG + "map":
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _TAG + "merge":
                    raise _refuse("YAML merge keys (<<) are not supported", key_node)
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _refuse("a mapping key must be a plain value, not a list or mapping", key_node)
                key = self.build(key_node)
                if key in result:
                    raise _refuse(f"duplicate key {key!r}", key_node)
                result[key] = self.build(value_node)
            return result
        if tag == _TAG + "seq":
            return [self.build(item) for item in node.value]
        if tag in _PLAIN_SCALARS and isinstance(node, yaml.ScalarNode):
            return _CONSTRUCTORS[tag](self.loader, node)
        name = tag.removeprefix(_TAG)
        raise _refuse(f"the YAML tag {'!!' + name if name != tag else tag} is not supported", node)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(key)  # the YAML parser below reports it with its line
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def load_yaml(text: str) -> Any:
    """The YAML document in ``text`` by the rules above; a ``TemplateError`` naming the line otherwise.

    JSON text (a YAML subset) takes a fast path through the json module: a template stored as JSON is read
    several times faster than through PyYAML."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text, object_pairs_hook=_json_object, parse_constant=_no_constant)
        except ValueError:
            pass  # YAML flow style, or broken: the YAML parser says where
    loader = _PARSER(text)
    try:
        node = loader.get_single_node()
        return None if node is None else _Builder(loader).build(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise TemplateError.one("", f"invalid YAML: {where}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise TemplateError.one("", f"invalid YAML: {exc}") from None
    except RecursionError:
        raise TemplateError.one("", TOO_DEEP) from None
    finally:
        loader.dispose()


# ------------------------------------------------------------------------------------ function calls


def function_name(value: Any) -> str | None:
    """The function a value calls (supported or not), or None when it is plain data."""
    if isinstance(value, dict) and len(value) == 1:
        (key,) = value
        if isinstance(key, str) and (key in _SUPPORTED or key in UNSUPPORTED_FUNCTIONS or key.startswith("Fn::")):
            return key
    return None


_SUPPORTED = frozenset(SUPPORTED_FUNCTIONS)


def references(value: Any) -> set[str]:
    """Resource names referenced by ``get_resource``/``get_attr`` anywhere in ``value``."""
    found: set[str] = set()
    _collect_references(value, found)
    return found


def _collect_references(value: Any, found: set[str]) -> None:
    if isinstance(value, dict):
        if len(value) == 1:
            (key,) = value
            arg = value[key]
            if key == "get_resource" and isinstance(arg, str):
                found.add(arg)
                return
            if key == "get_attr" and isinstance(arg, list) and arg and isinstance(arg[0], str):
                found.add(arg[0])
                for item in arg[1:]:
                    _collect_references(item, found)
                return
        for item in value.values():
            _collect_references(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_references(item, found)


def parameter_references(value: Any) -> set[str]:
    """Parameter names read by ``get_param`` anywhere in ``value``."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if len(item) == 1 and "get_param" in item:
                arg = item["get_param"]
                name = arg[0] if isinstance(arg, list) and arg else arg
                if isinstance(name, str):
                    found.add(name)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


class _Checker:
    """Walks values of a template, reporting wrong function calls and collecting condition names used.

    ``where`` says what a value may use: "resource" (everything), "output" (everything), "condition"
    (CONDITION_FUNCTIONS only).
    """

    def __init__(self, parameters: Collection[str], resources: Mapping[Any, Any],
                 conditions: Collection[str], problems: list[Problem],
                 attributes: Mapping[str, Collection[str]] | None = None) -> None:
        self.parameters = parameters
        self.attributes = attributes or {}
        self.resources = resources
        self.resource_names = {str(n) for n in resources}
        self.conditions = conditions
        self.problems = problems
        self.condition_names: set[str] = set()  # names used by the last walks (for condition cycles)

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def value(self, value: Any, path: str, where: str) -> None:
        if isinstance(value, dict):
            name = function_name(value)
            if name is None:
                for key, item in value.items():
                    self.value(item, join(path, key), where)
            else:
                self.call(name, value[name], join(path, name), where)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self.value(item, join(path, index), where)
        elif isinstance(value, float) and not math.isfinite(value):
            self.add(path, "numbers must be finite")

    def condition(self, value: Any, path: str) -> None:
        """A condition operand: a condition name, a boolean, or an expression of CONDITION_FUNCTIONS."""
        if isinstance(value, str):
            self.condition_names.add(value)
            if value not in self.conditions:
                self.add(path, f"unknown condition {value!r}" + _declared(self.conditions, "conditions"))
        elif isinstance(value, bool):
            return
        elif function_name(value) is not None:
            self.value(value, path, "condition")
        else:
            self.add(path, "a condition is a condition name, true/false, or a function "
                           f"({', '.join(CONDITION_FUNCTIONS)})")

    def call(self, name: str, arg: Any, path: str, where: str) -> None:
        if name not in _SUPPORTED:
            self.add(path, f"unknown function {name!r}; supported functions: {', '.join(SUPPORTED_FUNCTIONS)}")
            return
        if where == "condition" and name not in CONDITION_FUNCTIONS:
            self.add(path, f"{name} cannot be used in a condition; conditions may use "
                           f"{', '.join(CONDITION_FUNCTIONS)} and condition names")
            return
        getattr(self, "check_" + name)(arg, path, where)

    def check_get_param(self, arg: Any, path: str, where: str) -> None:
        items = arg if isinstance(arg, list) else [arg]
        if not items or not isinstance(items[0], str):
            self.add(path, "get_param takes a parameter name, or [name, key or index, ...]")
            return
        if items[0] not in self.parameters and items[0] not in PSEUDO_PARAMETERS:
            self.add(path, f"unknown parameter {items[0]!r}" + _declared(self.parameters, "parameters"))
        self._path_items(items[1:], path, where, first=1)

    def check_get_resource(self, arg: Any, path: str, where: str) -> None:
        if not isinstance(arg, str):
            self.add(path, "get_resource takes a resource name")
        elif arg not in self.resources:
            self.add(path, f"unknown resource {arg!r}" + _declared(self.resources, "resources"))

    def check_get_attr(self, arg: Any, path: str, where: str) -> None:
        if not isinstance(arg, list) or len(arg) < 2 or not isinstance(arg[0], str):
            self.add(path, "get_attr takes [resource name, attribute, key or index, ...]")
            return
        if arg[0] not in self.resources:
            self.add(join(path, 0), f"unknown resource {arg[0]!r}" + _declared(self.resources, "resources"))
        if not isinstance(arg[1], str) and function_name(arg[1]) is None:
            self.add(join(path, 1), "an attribute name is a string")
        elif isinstance(arg[1], str) and arg[0] in self.resources:
            body = self.resources[arg[0]]
            kind = body.get("type") if isinstance(body, dict) else None
            known = self.attributes.get(kind) if isinstance(kind, str) else None
            if known is not None and arg[1] not in known:
                self.add(join(path, 1), f"{kind} has no attribute {arg[1]!r}; it has {', '.join(known)}")
        self._path_items(arg[1:], path, where, first=1)

    def _path_items(self, items: list[Any], path: str, where: str, first: int) -> None:
        for index, item in enumerate(items, start=first):
            if function_name(item) is not None:
                self.value(item, join(path, index), where)
            elif not isinstance(item, str | int) or isinstance(item, bool):
                self.add(join(path, index), "a path item is a key (string) or an index (integer)")

    def check_list_join(self, arg: Any, path: str, where: str) -> None:
        if not isinstance(arg, list) or len(arg) < 2:
            self.add(path, "list_join takes [delimiter, list, ...]")
            return
        if not isinstance(arg[0], str):
            self.add(join(path, 0), "the delimiter is a string")
        for index, item in enumerate(arg[1:], start=1):
            if not isinstance(item, list) and function_name(item) is None:
                self.add(join(path, index), "list_join joins lists (or functions that give one)")
            else:
                self.value(item, join(path, index), where)

    def check_str_replace(self, arg: Any, path: str, where: str) -> None:
        if not isinstance(arg, dict) or set(arg) != {"template", "params"}:
            self.add(path, "str_replace takes {template: string, params: {placeholder: value, ...}}")
            return
        if not isinstance(arg["template"], str) and function_name(arg["template"]) is None:
            self.add(join(path, "template"), "the template is a string")
        params = arg["params"]
        if function_name(params) is None and (not isinstance(params, dict) or not params):
            self.add(join(path, "params"), "params is a non-empty mapping of placeholder: value")
        self.value(arg["template"], join(path, "template"), where)
        self.value(params, join(path, "params"), where)

    def check_if(self, arg: Any, path: str, where: str) -> None:
        if not isinstance(arg, list) or len(arg) != 3:
            self.add(path, "if takes [condition, value if true, value if false]")
            return
        self.condition(arg[0], join(path, 0))
        self.value(arg[1], join(path, 1), where)
        self.value(arg[2], join(path, 2), where)

    def check_equals(self, arg: Any, path: str, where: str) -> None:
        if not isinstance(arg, list) or len(arg) != 2:
            self.add(path, "equals takes [value, value]")
            return
        self.value(arg, path, where)

    def check_not(self, arg: Any, path: str, where: str) -> None:
        self.condition(arg, path)

    def check_and(self, arg: Any, path: str, where: str, name: str = "and") -> None:
        if not isinstance(arg, list) or len(arg) < 2:
            self.add(path, f"{name} takes a list of at least two conditions")
            return
        for index, item in enumerate(arg):
            self.condition(item, join(path, index))

    def check_or(self, arg: Any, path: str, where: str) -> None:
        self.check_and(arg, path, where, name="or")

    def check_repeat(self, arg: Any, path: str, where: str) -> None:
        if not isinstance(arg, dict) or not {"for_each", "template"} <= set(arg) \
                or not set(arg) <= {"for_each", "template", "permutations"}:
            self.add(path, "repeat takes {for_each: {placeholder: list, ...}, template: value, "
                           "permutations: true|false}")
            return
        for_each = arg["for_each"]
        if not isinstance(for_each, dict) or not for_each or function_name(for_each) is not None:
            self.add(join(path, "for_each"), "for_each is a non-empty mapping of placeholder: list")
        else:
            for key, values in for_each.items():
                if not isinstance(key, str) or not key:
                    self.add(join(path, "for_each"), "a placeholder is a non-empty string")
                elif not isinstance(values, list) and function_name(values) is None:
                    self.add(join(join(path, "for_each"), key), "the values to repeat over are a list")
                else:
                    self.value(values, join(join(path, "for_each"), key), where)
        if not isinstance(arg.get("permutations", True), bool):
            self.add(join(path, "permutations"), "permutations is true or false")
        self.value(arg["template"], join(path, "template"), where)


def _declared(names: Collection[str], what: str) -> str:
    shown = sorted(n for n in names if not str(n).startswith(CONDITION_KEY_PREFIX))
    if not shown:
        return f" (the template declares no {what})"
    listed = ", ".join(shown[:20]) + (", ..." if len(shown) > 20 else "")
    return f" (declared {what}: {listed})"


# ------------------------------------------------------------------------------------------- parse


def parse(source: str | Mapping[str, Any], *, resource_types: Collection[str],
          attributes: Mapping[str, Collection[str]] | None = None) -> Template:
    """The template in ``source`` (YAML text or a parsed mapping), checked against ``resource_types``
    and, when given, ``attributes`` (type -> the attribute names ``get_attr`` may read).

    Raises ``TemplateError`` with every problem found (not just the first).
    """
    raw = load_yaml(source) if isinstance(source, str) else source
    try:
        return _parse(raw, resource_types, attributes)
    except RecursionError:
        raise TemplateError.one("", TOO_DEEP) from None


def _parse(raw: Any, resource_types: Collection[str], attributes: Mapping[str, Collection[str]] | None) -> Template:
    if not isinstance(raw, Mapping):
        raise TemplateError.one("", "a template is a mapping (heat_template_version or "
                                    "armillary_template_version, parameters, resources, outputs, conditions)")
    raw = dict(raw)
    problems: list[Problem] = []
    for key in raw:
        if key not in TOP_KEYS:
            problems.append(Problem(str(key), f"unknown section; a template has {', '.join(TOP_KEYS)}"))
    version = _version(raw, problems)
    description = _text(raw.get("description"), "description", problems)
    params_raw = _section(raw, "parameters", problems)
    resources_raw = _section(raw, "resources", problems)
    outputs_raw = _section(raw, "outputs", problems)
    conditions_raw = _section(raw, "conditions", problems)
    for section, mapping in (("parameters", params_raw), ("resources", resources_raw),
                             ("outputs", outputs_raw), ("conditions", conditions_raw)):
        for name in mapping:
            if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
                problems.append(Problem(join(section, name), "a name has 1-128 letters, digits, '_', '.' or '-' "
                                                             "and does not start with '.' or '-'"))

    declared: dict[str, Parameter] = {}
    for name, decl in params_raw.items():
        param = parameters.declaration(str(name), decl, problems)
        if param is not None:
            declared[str(name)] = param
    _parameter_groups(raw.get("parameter_groups"), params_raw, problems)

    conditions: dict[str, Any] = dict(conditions_raw)
    checker = _Checker(params_raw, resources_raw, conditions, problems, attributes)
    condition_edges: dict[str, set[str]] = {}
    for name, expr in conditions_raw.items():
        checker.condition_names = set()
        checker.condition(expr, join("conditions", name))
        condition_edges[name] = checker.condition_names
    cycle = graph.find_cycle(condition_edges)
    if cycle:
        problems.append(Problem(join("conditions", cycle[0]), "conditions refer to each other in a cycle: "
                                + " -> ".join(cycle)))

    known_types = set(resource_types)
    resources: dict[str, Resource] = {}
    for name, body in resources_raw.items():
        resource = _resource(str(name), body, known_types, checker, conditions)
        if resource is not None:
            resources[str(name)] = resource
    hidden = {n for n, p in declared.items() if p.hidden}
    outputs: dict[str, Output] = {}
    for name, body in outputs_raw.items():
        output = _output(str(name), body, checker, conditions, hidden)
        if output is not None:
            outputs[str(name)] = output

    cycle = graph.find_cycle({n: r.depends_on for n, r in resources.items()})
    if cycle:
        problems.append(Problem(join("resources", cycle[0]), "dependency cycle: " + " -> ".join(cycle)))
    if problems:
        raise TemplateError(problems)
    return Template(version=version, description=description, parameters=declared, resources=resources,
                    outputs=outputs, conditions=conditions, raw=raw)


def _version(raw: Mapping[str, Any], problems: list[Problem]) -> str:
    hot, ours = raw.get("heat_template_version"), raw.get("armillary_template_version")
    if hot is not None and ours is not None:
        problems.append(Problem("armillary_template_version",
                                "give heat_template_version or armillary_template_version, not both"))
    if ours is not None:
        if isinstance(ours, bool) or ours not in ARMILLARY_VERSIONS:
            problems.append(Problem("armillary_template_version",
                                    f"unsupported version {ours!r}; supported: "
                                    f"{', '.join(map(str, ARMILLARY_VERSIONS))}"))
            return ""
        return str(ours)
    if hot is not None:
        if str(hot) not in HOT_VERSIONS:
            problems.append(Problem("heat_template_version", f"unsupported version {hot!r}; supported: "
                                                             f"{', '.join(HOT_VERSIONS)}"))
            return ""
        return HOT_VERSIONS[str(hot)]
    problems.append(Problem("", "the template needs armillary_template_version: 1 "
                                "(or a heat_template_version)"))
    return ""


def _text(value: Any, path: str, problems: list[Problem]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.append(Problem(path, "a description is a string"))
        return ""
    return value


def _section(raw: Mapping[str, Any], name: str, problems: list[Problem]) -> dict[Any, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(Problem(name, f"{name} is a mapping of name: definition"))
        return {}
    return dict(value)


def _parameter_groups(groups: Any, params: Mapping[Any, Any], problems: list[Problem]) -> None:
    """HOT's ``parameter_groups`` (presentation only): checked for shape and parameter names."""
    if groups is None:
        return
    if not isinstance(groups, list):
        problems.append(Problem("parameter_groups", "parameter_groups is a list of {label, description, "
                                                    "parameters}"))
        return
    for index, group in enumerate(groups):
        path = join("parameter_groups", index)
        if not isinstance(group, dict) or not set(group) <= {"label", "description", "parameters"}:
            problems.append(Problem(path, "a group is {label, description, parameters: [name, ...]}"))
            continue
        for name in group.get("parameters") or []:
            if name not in params:
                problems.append(Problem(join(path, "parameters"), f"unknown parameter {name!r}"))


def _names(value: Any) -> Iterator[Any]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        yield from value
    else:
        yield value


def _resource(name: str, body: Any, known_types: set[str], checker: _Checker,
              conditions: dict[str, Any]) -> Resource | None:
    path = join("resources", name)
    problems = checker.problems
    if not isinstance(body, dict):
        problems.append(Problem(path, "a resource is a mapping with at least a type"))
        return None
    for key in body:
        if key not in RESOURCE_KEYS:
            problems.append(Problem(join(path, key), f"unknown resource key; a resource has "
                                                     f"{', '.join(RESOURCE_KEYS)}"))
    kind = body.get("type")
    if not isinstance(kind, str):
        problems.append(Problem(join(path, "type"), "a resource needs a type"))
        kind = ""
    elif kind not in known_types:
        supported = ", ".join(sorted(known_types)) or "none installed"
        if kind.startswith(("OS::", "AWS::")):
            message = f"{kind} is an OpenStack resource type, not supported here; supported types: {supported}"
        else:
            message = f"unknown resource type {kind!r}; supported types: {supported}"
        problems.append(Problem(join(path, "type"), message))
    properties = body.get("properties")
    if properties is None:
        properties = {}
    if not isinstance(properties, dict):
        problems.append(Problem(join(path, "properties"), "properties is a mapping"))
    checker.value(properties, join(path, "properties"), "resource")
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        problems.append(Problem(join(path, "metadata"), "metadata is a mapping"))
        metadata = {}
    checker.value(metadata, join(path, "metadata"), "resource")
    external_id = body.get("external_id")
    if external_id is not None and (not isinstance(external_id, str | int) or isinstance(external_id, bool)
                                    or external_id == ""):
        problems.append(Problem(join(path, "external_id"), "external_id is the literal id of the thing to adopt "
                                                           "(a string or an integer; functions are not supported)"))
    explicit: list[str] = []
    for index, dep in enumerate(_names(body.get("depends_on") or [])):
        dep_path = join(path, "depends_on") if isinstance(body.get("depends_on"), str) \
            else join(join(path, "depends_on"), index)
        if not isinstance(dep, str):
            problems.append(Problem(dep_path, "depends_on is a resource name or a list of them"))
        elif dep not in checker.resources:
            problems.append(Problem(dep_path, f"unknown resource {dep!r}"
                                              + _declared(checker.resources, "resources")))
        else:
            explicit.append(dep)
    implied = references(properties) | references(metadata)
    depends_on = tuple(sorted((set(explicit) | implied) & checker.resource_names))

    deletion = body.get("deletion_policy", "delete")
    if deletion not in DELETION_POLICIES:
        problems.append(Problem(join(path, "deletion_policy"), "deletion_policy is delete or retain"
                                + (" (Snapshot is not supported)" if deletion == "Snapshot" else "")))
        deletion = "delete"
    update = _update_policy(body.get("update_policy"), join(path, "update_policy"), problems)
    condition = _condition_ref(body.get("condition"), join(path, "condition"), checker, conditions,
                               CONDITION_KEY_PREFIX + path)
    return Resource(name=name, type=kind, properties=properties, depends_on=depends_on,
                    explicit_depends_on=tuple(sorted(set(explicit))), condition=condition,
                    deletion_policy=DELETION_POLICIES[deletion], update_policy=update,
                    external_id=external_id, metadata=metadata)


def _update_policy(value: Any, path: str, problems: list[Problem]) -> dict:
    policy: dict[str, Any] = {"replace": DEFAULT_REPLACE, "restricted": []}
    if value is None:
        return policy
    if not isinstance(value, dict):
        problems.append(Problem(path, "update_policy is {replace: create_before_delete | delete_before_create, "
                                      "restricted: [replace, update]}"))
        return policy
    for key in value:
        if key not in ("replace", "restricted"):
            problems.append(Problem(join(path, key), "unknown update_policy key; it has replace and restricted"))
    replace = value.get("replace", DEFAULT_REPLACE)
    if replace not in REPLACE_POLICIES:
        problems.append(Problem(join(path, "replace"), f"replace is one of {', '.join(REPLACE_POLICIES)}"))
    else:
        policy["replace"] = replace
    restricted = value.get("restricted") or []
    if isinstance(restricted, str):
        restricted = [restricted]
    if not isinstance(restricted, list) or any(r not in RESTRICTABLE for r in restricted):
        problems.append(Problem(join(path, "restricted"), f"restricted lists actions among "
                                                          f"{', '.join(RESTRICTABLE)}"))
    else:
        policy["restricted"] = sorted(set(restricted))
    return policy


def _condition_ref(value: Any, path: str, checker: _Checker, conditions: dict[str, Any],
                   synthetic: str) -> str | None:
    """The condition name a resource/output is subject to (see the module docstring), or None."""
    if value is None or value is True:
        return None
    checker.condition(value, path)
    if isinstance(value, str):
        return value
    conditions[synthetic] = value
    return synthetic


def _output(name: str, body: Any, checker: _Checker, conditions: dict[str, Any],
            hidden: set[str]) -> Output | None:
    path = join("outputs", name)
    problems = checker.problems
    if not isinstance(body, dict) or "value" not in body:
        problems.append(Problem(path, "an output is a mapping with a value"))
        return None
    for key in body:
        if key not in OUTPUT_KEYS:
            problems.append(Problem(join(path, key), f"unknown output key; an output has {', '.join(OUTPUT_KEYS)}"))
    checker.value(body["value"], join(path, "value"), "output")
    secret = body.get("secret", False)
    if not isinstance(secret, bool):
        problems.append(Problem(join(path, "secret"), "secret is true or false"))
        secret = False
    condition = _condition_ref(body.get("condition"), join(path, "condition"), checker, conditions,
                               CONDITION_KEY_PREFIX + path)
    return Output(name=name, value=body["value"], description=_text(body.get("description"),
                                                                   join(path, "description"), problems),
                  condition=condition,
                  secret=secret or bool(parameter_references(body["value"]) & hidden))

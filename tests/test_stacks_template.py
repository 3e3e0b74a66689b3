"""The stack template language (issue 19): parsing and refusals, intrinsic functions, parameters and
secrets, the dependency graph. Pure unit tests, one row per case (``docs/stacks-templates.md`` is the
reference they pin)."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import pytest

from armillary.stacks import functions, graph, parameters, template
from armillary.stacks.functions import UNKNOWN, Context, evaluate_conditions, references, resolve
from armillary.stacks.parameters import bind_parameters, hidden_parameters, redact, secret_values
from armillary.stacks.template import SUPPORTED_FUNCTIONS, TemplateError, parse

TYPES = ("Armillary::System", "Armillary::DNSRecord", "Armillary::IPReservation", "Armillary::Cluster")

# A HOT template as an OpenStack user would write it, using only our functions and types: parses unchanged.
HOT = """
heat_template_version: 2018-08-31
description: Two web servers behind a DNS name
parameter_groups:
  - label: sizing
    parameters: [count, flavor]
parameters:
  image:
    type: string
    label: Image
    description: Container image of the web servers
    default: nginx:1.25
  count:
    type: number
    default: 2
    constraints:
      - range: {min: 1, max: 5}
        description: between one and five servers
  flavor:
    type: string
    default: small
    constraints:
      - allowed_values: [small, large]
  env:
    type: string
    default: dev
  admin_password:
    type: string
    hidden: true
    constraints:
      - length: {min: 8}
      - allowed_pattern: "[A-Za-z0-9]+"
  zones:
    type: comma_delimited_list
    default: "a, b"
conditions:
  is_prod: {equals: [{get_param: env}, prod]}
  not_prod: {not: is_prod}
  big: {or: [is_prod, {equals: [{get_param: flavor}, large]}]}
resources:
  address:
    type: Armillary::IPReservation
    properties:
      pool: lan
  web:
    type: Armillary::System
    deletion_policy: Retain
    update_policy: {replace: delete_before_create, restricted: [replace]}
    metadata:
      stack: {get_param: OS::stack_name}
    properties:
      image: {get_param: image}
      hostname:
        str_replace:
          template: web-$ENV-$ZONE
          params: {$ENV: {get_param: env}, $ZONE: {get_param: [zones, 0]}}
      address: {get_attr: [address, address]}
      size: {if: [big, large, small]}
      password: {get_param: admin_password}
      labels:
        repeat:
          for_each: {"<%zone%>": {get_param: zones}}
          template: {zone: "<%zone%>"}
  name:
    type: Armillary::DNSRecord
    condition: is_prod
    depends_on: [web]
    properties:
      name: {list_join: [".", [www, {get_param: env}], [example, org]]}
      target: {get_resource: address}
outputs:
  url:
    description: where to go
    value: {list_join: ["", ["http://", {get_attr: [web, addresses, 0, ip]}, "/"]]}
  record:
    value: {get_resource: name}
    condition: is_prod
  mode:
    value: {if: [is_prod, production, {if: [not_prod, development, never]}]}
  login:
    value: {str_replace: {template: "admin:PW", params: {PW: {get_param: admin_password}}}}
"""

IDS = {"address": "ip-7", "web": "42", "name": "rec-1"}
ATTRIBUTES: dict[str, dict[str, Any]] = {"address": {"address": "10.0.0.5"}, "web": {"addresses": [{"ip": "10.0.0.9"}], "state": "ready"}}


def known(name: str) -> Any:
    return IDS.get(name, UNKNOWN)


def attribute(name: str, path: tuple[Any, ...]) -> Any:
    assert len(path) == 1  # resolve applies the rest of a get_attr path itself
    return ATTRIBUTES[name][path[0]] if name in ATTRIBUTES else UNKNOWN


def ctx(params: dict[str, Any] | None = None, conditions: dict[str, bool] | None = None) -> Context:
    return Context(params=params or {}, conditions=conditions or {}, resource_id=known, attribute=attribute)


def tmpl(resources: Any = None, **sections: Any) -> dict[str, Any]:
    return {"armillary_template_version": 1, "resources": resources or {}, **sections}


def system(**body: Any) -> dict[str, Any]:
    return {"type": "Armillary::System", **body}


def problems(source: Any) -> list[tuple[str, str]]:
    with pytest.raises(TemplateError) as caught:
        parse(source, resource_types=TYPES)
    return [(p.path, p.message) for p in caught.value.problems]


# --------------------------------------------------------------------------------------------- parse


@pytest.fixture(scope="module")
def hot() -> template.Template:
    return parse(HOT, resource_types=TYPES)


def test_a_hot_template_with_our_types_parses_unchanged(hot: template.Template) -> None:
    assert hot.version == "2018-08-31"
    assert hot.description == "Two web servers behind a DNS name"
    assert list(hot.parameters) == ["image", "count", "flavor", "env", "admin_password", "zones"]
    count = hot.parameters["count"]
    assert (count.type, count.default, count.label) == ("number", 2, None)
    assert hot.parameters["image"].label == "Image"
    assert hot.parameters["zones"].default == ["a", "b"]
    assert hidden_parameters(hot) == {"admin_password"}
    web = hot.resources["web"]
    assert web.depends_on == ("address",) and web.explicit_depends_on == ()
    assert web.deletion_policy == "retain"
    assert web.update_policy == {"replace": "delete_before_create", "restricted": ["replace"]}
    name = hot.resources["name"]
    assert name.depends_on == ("address", "web") and name.explicit_depends_on == ("web",)
    assert name.condition == "is_prod"
    address = hot.resources["address"]
    assert (address.deletion_policy, address.update_policy, address.condition, address.external_id,
            address.metadata) == ("delete", {"replace": "delete_before_create", "restricted": []}, None, None, {})
    assert hot.outputs["login"].secret and not hot.outputs["url"].secret  # a hidden parameter makes it secret
    assert hot.raw["heat_template_version"] == "2018-08-31"  # a string, not a date


@pytest.mark.parametrize(("version", "expected"), [
    ({"heat_template_version": "2013-05-23"}, "2013-05-23"),
    ({"heat_template_version": "2021-04-16"}, "2021-04-16"),
    ({"heat_template_version": "wallaby"}, "2021-04-16"),
    ({"heat_template_version": "newton"}, "2016-10-14"),
    ({"armillary_template_version": 1}, "1"),
])
def test_versions(version: dict, expected: str) -> None:
    assert parse({**version, "resources": {}}, resource_types=TYPES).version == expected


def test_a_yaml_date_version_is_read_as_text() -> None:
    parsed = parse("heat_template_version: 2015-04-30\nresources: {a: {type: Armillary::System, "
                   "properties: {when: 2020-01-02}}}", resource_types=TYPES)
    assert parsed.version == "2015-04-30"
    assert parsed.resources["a"].properties == {"when": "2020-01-02"}


# (template, expected (path, message fragment) among the problems)
REFUSALS = [
    ({"resources": {}}, "", "needs armillary_template_version: 1"),
    ({"heat_template_version": "2012-12-12", "resources": {}}, "heat_template_version", "unsupported version"),
    ({"armillary_template_version": 2}, "armillary_template_version", "unsupported version 2"),
    ({"armillary_template_version": 1, "heat_template_version": "wallaby"}, "armillary_template_version",
     "not both"),
    (tmpl(mappings={}), "mappings", "unknown section"),
    (tmpl(description=3), "description", "a description is a string"),
    (tmpl(resources=[1]), "resources", "resources is a mapping"),
    (tmpl({"web": system(propertees={})}), "resources.web.propertees", "unknown resource key"),
    (tmpl({"web": {"properties": {}}}), "resources.web.type", "a resource needs a type"),
    (tmpl({"web": "x"}), "resources.web", "a resource is a mapping"),
    (tmpl({"web": {"type": "OS::Nova::Server"}}), "resources.web.type",
     ("OS::Nova::Server is an OpenStack resource type, not supported here; supported types: "
     "Armillary::Cluster, Armillary::DNSRecord, Armillary::IPReservation, Armillary::System")),
    (tmpl({"web": {"type": "Armillary::Nope"}}), "resources.web.type", "unknown resource type 'Armillary::Nope'"),
    (tmpl({"web": system(properties=[1])}), "resources.web.properties", "properties is a mapping"),
    (tmpl({"web": system(metadata=1)}), "resources.web.metadata", "metadata is a mapping"),
    (tmpl({"web": system(external_id=[1])}), "resources.web.external_id", "external_id is the literal id"),
    (tmpl({"web": system(external_id={"get_param": "x"})}), "resources.web.external_id",
     "functions are not supported"),
    (tmpl({"bad name": system()}), "resources.bad name", "a name has 1-128 letters"),
    (tmpl({"web": system(properties={"x": {"get_file": "a.sh"}})}), "resources.web.properties.x.get_file",
     "unknown function 'get_file'; supported functions: " + ", ".join(SUPPORTED_FUNCTIONS)),
    (tmpl({"web": system(properties={"x": {"Fn::Join": ["", []]}})}), "resources.web.properties.x.Fn::Join",
     "unknown function 'Fn::Join'"),
    (tmpl({"web": system(properties={"x": [{"map_merge": []}]})}), "resources.web.properties.x[0].map_merge",
     "unknown function"),
    (tmpl({"web": system(properties={"x": {"get_param": "nope"}})}), "resources.web.properties.x.get_param",
     "unknown parameter 'nope' (the template declares no parameters)"),
    (tmpl({"web": system(properties={"x": {"get_param": [1]}})}), "resources.web.properties.x.get_param",
     "get_param takes a parameter name"),
    (tmpl({"web": system(properties={"x": {"get_resource": "db"}})}), "resources.web.properties.x.get_resource",
     "unknown resource 'db' (declared resources: web)"),
    (tmpl({"web": system(properties={"x": {"get_resource": ["db"]}})}),
     "resources.web.properties.x.get_resource", "get_resource takes a resource name"),
    (tmpl({"web": system(properties={"x": {"get_attr": ["db", "ip"]}})}),
     "resources.web.properties.x.get_attr[0]", "unknown resource 'db'"),
    (tmpl({"web": system(properties={"x": {"get_attr": "db"}})}), "resources.web.properties.x.get_attr",
     "get_attr takes [resource name, attribute, key or index, ...]"),
    (tmpl({"web": system(properties={"x": {"get_attr": ["web", "a", 1.5]}})}),
     "resources.web.properties.x.get_attr[2]", "a path item is a key (string) or an index (integer)"),
    (tmpl({"web": system(properties={"x": {"list_join": [","]}})}), "resources.web.properties.x.list_join",
     "list_join takes [delimiter, list, ...]"),
    (tmpl({"web": system(properties={"x": {"list_join": [1, ["a"]]}})}),
     "resources.web.properties.x.list_join[0]", "the delimiter is a string"),
    (tmpl({"web": system(properties={"x": {"list_join": [",", "a"]}})}),
     "resources.web.properties.x.list_join[1]", "list_join joins lists"),
    (tmpl({"web": system(properties={"x": {"str_replace": {"template": "a"}}})}),
     "resources.web.properties.x.str_replace", "str_replace takes {template: string, params:"),
    (tmpl({"web": system(properties={"x": {"str_replace": {"template": ["a"], "params": {"a": 1}}}})}),
     "resources.web.properties.x.str_replace.template", "the template is a string"),
    (tmpl({"web": system(properties={"x": {"str_replace": {"template": "a", "params": []}}})}),
     "resources.web.properties.x.str_replace.params", "params is a non-empty mapping"),
    (tmpl({"web": system(properties={"x": {"if": [True, 1]}})}), "resources.web.properties.x.if",
     "if takes [condition, value if true, value if false]"),
    (tmpl({"web": system(properties={"x": {"if": ["nope", 1, 2]}})}), "resources.web.properties.x.if[0]",
     "unknown condition 'nope'"),
    (tmpl({"web": system(properties={"x": {"if": [3, 1, 2]}})}), "resources.web.properties.x.if[0]",
     "a condition is a condition name, true/false, or a function"),
    (tmpl({"web": system(properties={"x": {"if": [{"get_resource": "web"}, 1, 2]}})}),
     "resources.web.properties.x.if[0].get_resource", "get_resource cannot be used in a condition"),
    (tmpl({"web": system(properties={"x": {"equals": [1]}})}), "resources.web.properties.x.equals",
     "equals takes [value, value]"),
    (tmpl({"web": system(properties={"x": {"and": [True]}})}), "resources.web.properties.x.and",
     "and takes a list of at least two conditions"),
    (tmpl({"web": system(properties={"x": {"or": "a"}})}), "resources.web.properties.x.or",
     "or takes a list of at least two conditions"),
    (tmpl({"web": system(properties={"x": {"not": "ghost"}})}), "resources.web.properties.x.not",
     "unknown condition 'ghost'"),
    (tmpl({"web": system(properties={"x": {"repeat": {"template": 1}}})}),
     "resources.web.properties.x.repeat", "repeat takes {for_each:"),
    (tmpl({"web": system(properties={"x": {"repeat": {"for_each": {"%a%": "x"}, "template": 1}}})}),
     "resources.web.properties.x.repeat.for_each.%a%", "the values to repeat over are a list"),
    (tmpl({"web": system(properties={"x": {"repeat": {"for_each": {"%a%": []}, "template": 1,
                                                       "permutations": "no"}}})}),
     "resources.web.properties.x.repeat.permutations", "permutations is true or false"),
    (tmpl({"web": system(depends_on="db")}), "resources.web.depends_on", "unknown resource 'db'"),
    (tmpl({"web": system(depends_on=["web", 3])}), "resources.web.depends_on[1]",
     "depends_on is a resource name or a list"),
    (tmpl({"web": system(condition="ghost")}), "resources.web.condition", "unknown condition 'ghost'"),
    (tmpl({"web": system(deletion_policy="Snapshot")}), "resources.web.deletion_policy",
     "deletion_policy is delete or retain (Snapshot is not supported)"),
    (tmpl({"web": system(update_policy={"rolling_update": {}})}), "resources.web.update_policy.rolling_update",
     "unknown update_policy key"),
    (tmpl({"web": system(update_policy={"replace": "never"})}), "resources.web.update_policy.replace",
     "replace is one of create_before_delete, delete_before_create"),
    (tmpl({"web": system(update_policy={"restricted": ["delete"]})}), "resources.web.update_policy.restricted",
     "restricted lists actions among replace, update"),
    (tmpl(outputs={"o": {"description": "no value"}}), "outputs.o", "an output is a mapping with a value"),
    (tmpl(outputs={"o": {"value": 1, "export": True}}), "outputs.o.export", "unknown output key"),
    (tmpl(outputs={"o": {"value": {"get_resource": "db"}}}), "outputs.o.value.get_resource",
     "unknown resource 'db'"),
    (tmpl(outputs={"o": {"value": 1, "secret": "yes"}}), "outputs.o.secret", "secret is true or false"),
    (tmpl(conditions={"c": {"get_attr": ["web", "x"]}}, resources={"web": system()}), "conditions.c.get_attr",
     "get_attr cannot be used in a condition; conditions may use get_param, equals, not, and, or"),
    (tmpl(conditions={"c": {"list_join": [",", ["a"]]}}), "conditions.c.list_join", "cannot be used in a condition"),
    (tmpl(conditions={"a": {"not": "b"}, "b": {"and": ["a", True]}}), "conditions.a",
     "conditions refer to each other in a cycle: a -> b -> a"),
    (tmpl(conditions={"c": 3}), "conditions.c", "a condition is a condition name, true/false, or a function"),
    (tmpl(parameters={"p": {"type": "integer"}}), "parameters.p.type",
     "the type is one of string, number, boolean, json, comma_delimited_list"),
    (tmpl(parameters={"p": "string"}), "parameters.p", "a parameter is a mapping"),
    (tmpl(parameters={"p": {"type": "string", "secret": True}}), "parameters.p.secret", "unknown parameter key"),
    (tmpl(parameters={"p": {"type": "string", "hidden": "yes"}}), "parameters.p.hidden", "hidden is true or false"),
    (tmpl(parameters={"p": {"type": "number", "default": "many"}}), "parameters.p.default",
     'the default: "many" is not a number'),
    (tmpl(parameters={"p": {"type": "string", "default": "abc", "constraints": [{"length": {"max": 2}}]}}),
     "parameters.p.default", "the default: the length must be at most 2 characters (it is 3)"),
    (tmpl(parameters={"p": {"type": "string", "constraints": [{"range": {"min": 1}}]}}),
     "parameters.p.constraints[0].range", "range applies to number parameters, not string"),
    (tmpl(parameters={"p": {"type": "string", "constraints": [{"custom_constraint": "nova.flavor"}]}}),
     "parameters.p.constraints[0]", "custom_constraint is not supported"),
    (tmpl(parameters={"p": {"type": "string", "constraints": [{"allowed_pattern": "("}]}}),
     "parameters.p.constraints[0].allowed_pattern", "not a valid regular expression"),
    (tmpl(parameters={"p": {"type": "number", "constraints": [{"range": {"min": 5, "max": 1}}]}}),
     "parameters.p.constraints[0].range", "min is above max"),
    (tmpl(parameters={"p": {"type": "number", "constraints": [{"modulo": {"step": 0, "offset": 0}}]}}),
     "parameters.p.constraints[0].modulo", "modulo is {step: number (not 0)"),
    (tmpl(parameters={"p": {"type": "string", "constraints": [{"allowed_values": []}]}}),
     "parameters.p.constraints[0].allowed_values", "allowed_values is a non-empty list"),
    (tmpl(parameters={"p": {"type": "string", "constraints": {"length": {}}}}), "parameters.p.constraints",
     "constraints is a list"),
    (tmpl(parameter_groups=[{"label": "x", "parameters": ["ghost"]}]), "parameter_groups[0].parameters",
     "unknown parameter 'ghost'"),
]


@pytest.mark.parametrize(("source", "path", "message"), REFUSALS)
def test_refusals_name_their_path(source: dict, path: str, message: str) -> None:
    found = problems(source)
    assert any(p == path and message in m for p, m in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = problems(tmpl(
        {"web": system(properties={"a": {"get_param": "x"}, "b": {"yaql": {}}}, depends_on="cache"),
         "db": {"type": "OS::Trove::Instance"}},
        outputs={"o": {"value": {"get_attr": ["ghost", "ip"]}}}, colour="blue"))
    assert [p for p, _ in found] == ["colour", "resources.web.properties.a.get_param",
                                     "resources.web.properties.b.yaql", "resources.web.depends_on",
                                     "resources.db.type", "outputs.o.value.get_attr[0]"]
    assert "resources.db.type: OS::Trove::Instance is an OpenStack resource type" in str(
        TemplateError([template.Problem(p, m) for p, m in found]))


@pytest.mark.parametrize(("resources", "cycle"), [
    ({"a": system(depends_on="b"), "b": system(depends_on="c"), "c": system(depends_on="a")},
     "dependency cycle: a -> b -> c -> a"),
    ({"a": system(properties={"x": {"get_attr": ["b", "ip"]}}), "b": system(properties={"y": {"get_resource": "a"}})},
     "dependency cycle: a -> b -> a"),
    ({"a": system(depends_on=["a"])}, "dependency cycle: a -> a"),
    ({"z": system(), "a": system(depends_on="z", metadata={"m": {"get_resource": "b"}}),
      "b": system(metadata={"x": {"get_attr": ["a", "id"]}})}, "dependency cycle: a -> b -> a"),
])
def test_a_cycle_is_refused_naming_it(resources: dict, cycle: str) -> None:
    assert [m for p, m in problems(tmpl(resources)) if m.startswith("dependency cycle")] == [cycle]


@pytest.mark.parametrize(("text", "message"), [
    ("armillary_template_version: 1\nresources: {}\nresources: {}\n", "line 3, column 1: duplicate key 'resources'"),
    ("armillary_template_version: 1\nresources:\n  a: &x {type: Armillary::System}\n  b: *x\n",
     "YAML anchors and aliases"),
    ("armillary_template_version: 1\nresources:\n  a: {type: Armillary::System\n", "invalid YAML: line"),
    ("armillary_template_version: 1\nresources:\n  a: {<<: {type: x}}\n", "merge keys"),
    ("- just\n- a list\n", "a template is a mapping"),
    ("armillary_template_version: 1\n? [a, b]\n: 1\n", "a mapping key must be a plain value"),
    ("armillary_template_version: 1\nresources: !Ref web\n", "line 2, column 12: the YAML tag !Ref is not supported"),
    ("armillary_template_version: 1\nx: !!binary aGk=\n", "the YAML tag !!binary is not supported"),
    ("armillary_template_version: 1\nx: !!set {a: null}\n", "the YAML tag !!set is not supported"),
    ("a: 1\n---\nb: 2\n", "line 2, column 1: but found another document"),
    ("armillary_template_version: 1\n1: a\n1: b\n", "line 3, column 1: duplicate key 1"),
    ("armillary_template_version: 1\nresources: " + "[" * 5000 + "]" * 5000 + "\n", "exceeded maximum nesting depth"),
])
def test_yaml_refusals(text: str, message: str) -> None:
    ((path, found),) = problems(text)
    assert path == "" and message in found


def test_a_deeply_nested_mapping_is_refused_not_crashing() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert problems(tmpl({"a": system(properties={"x": deep})})) == [("", "the template is nested too deeply")]


def test_update_policy_restricted_accepts_a_single_action_and_deletion_policy_words() -> None:
    parsed = parse(tmpl({"a": system(update_policy={"restricted": "replace"}, deletion_policy="delete"),
                         "b": system(deletion_policy="Delete")}), resource_types=TYPES)
    assert parsed.resources["a"].update_policy == {"replace": "delete_before_create", "restricted": ["replace"]}
    assert parsed.resources["b"].deletion_policy == "delete"


# ----------------------------------------------------------------------------------------- functions

PARAMS = {"name": "web", "port": 8080, "tags": ["a", "b"], "conf": {"db": {"hosts": ["h1", "h2"]}},
          "on": True, "env": "prod"}

# (value, expected) resolved with PARAMS, conditions {"prod": True, "small": False}, IDS and ATTRIBUTES
RESOLVE = [
    ("plain", "plain"),
    ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}),
    ({"k1": 1, "k2": 2}, {"k1": 1, "k2": 2}),  # two keys: data, never a call
    ({"get_param": "port"}, 8080),
    ({"get_param": ["conf", "db", "hosts", 1]}, "h2"),
    ({"get_param": ["tags", "0"]}, "a"),
    ({"get_param": ["tags", -1]}, "b"),
    ({"get_resource": "web"}, "42"),
    ({"get_attr": ["address", "address"]}, "10.0.0.5"),
    ({"get_attr": ["web", "addresses", 0, "ip"]}, "10.0.0.9"),
    ({"get_attr": ["web", "state"]}, "ready"),
    ({"get_attr": ["address", {"str_replace": {"template": "addrX", "params": {"X": "ess"}}}]}, "10.0.0.5"),
    ({"list_join": [", ", ["a", "b"], ["c"]]}, "a, b, c"),
    ({"list_join": ["-", {"get_param": "tags"}, [1, True, None, {"x": 1}]]}, 'a-b-1-true--{"x": 1}'),
    ({"list_join": [",", []]}, ""),
    ({"str_replace": {"template": "http://HOST:PORT/", "params": {"HOST": {"get_attr": ["address", "address"]},
                                                                  "PORT": {"get_param": "port"}}}},
     "http://10.0.0.5:8080/"),
    ({"str_replace": {"template": "$a $ab $b", "params": {"$a": "1", "$ab": "2", "$b": "$a"}}}, "1 2 $a"),
    ({"if": ["prod", "big", "tiny"]}, "big"),
    ({"if": ["small", "big", {"get_param": "name"}]}, "web"),
    ({"if": [{"equals": [{"get_param": "env"}, "dev"]}, 1, 2]}, 2),
    ({"if": [True, {"k": {"get_param": "port"}}, {"get_param": "missing"}]}, {"k": 8080}),  # branch not taken
    ({"equals": [{"get_param": "port"}, 8080]}, True),
    ({"equals": [1, True]}, False),
    ({"equals": [{"get_param": "tags"}, ["a", "b"]]}, True),
    ({"not": "prod"}, False),
    ({"not": {"equals": [1, 2]}}, True),
    ({"and": ["prod", {"get_param": "on"}, True]}, True),
    ({"and": ["prod", "small"]}, False),
    ({"or": ["small", False]}, False),
    ({"or": ["small", {"not": "small"}]}, True),
    ({"repeat": {"for_each": {"%p%": [80, 443]}, "template": {"port": "%p%", "name": "p%p%"}}},
     [{"port": 80, "name": "p80"}, {"port": 443, "name": "p443"}]),
    ({"repeat": {"for_each": {"<%h%>": ["a", "b"], "<%p%>": [1, 2]}, "template": "<%h%>:<%p%>"}},
     ["a:1", "a:2", "b:1", "b:2"]),
    ({"repeat": {"for_each": {"<%h%>": ["a", "b"], "<%p%>": [1, 2]}, "template": "<%h%>:<%p%>",
                 "permutations": False}}, ["a:1", "b:2"]),
    ({"repeat": {"for_each": {"%t%": {"get_param": "tags"}}, "template": {"%t%_key": {"get_param": "port"}}}},
     [{"a_key": 8080}, {"b_key": 8080}]),
    ({"repeat": {"for_each": {"%x%": []}, "template": "%x%"}}, []),
    ({"list_join": ["/", {"repeat": {"for_each": {"X": ["1", "2"]}, "template": "dX"}}]}, "d1/d2"),
]


@pytest.mark.parametrize(("value", "expected"), RESOLVE)
def test_resolve(value: Any, expected: Any) -> None:
    assert resolve(value, ctx(PARAMS, {"prod": True, "small": False})) == expected


# (value, expected) where web2 is not made yet (id and attributes UNKNOWN)
UNKNOWNS = [
    ({"get_resource": "web2"}, UNKNOWN),
    ({"get_attr": ["web2", "ip", 0]}, UNKNOWN),
    ({"a": {"get_resource": "web2"}, "b": 1}, {"a": UNKNOWN, "b": 1}),  # data keeps what is known
    ([{"get_resource": "web2"}, "x"], [UNKNOWN, "x"]),
    ({"list_join": [",", ["a", {"get_resource": "web2"}]]}, UNKNOWN),
    ({"str_replace": {"template": "x=X", "params": {"X": {"get_attr": ["web2", "ip"]}}}}, UNKNOWN),
    ({"equals": [{"get_resource": "web2"}, "1"]}, UNKNOWN),
    ({"not": {"equals": [{"get_resource": "web2"}, "1"]}}, UNKNOWN),
    ({"if": ["prod", "known", {"get_resource": "web2"}]}, "known"),  # only the branch taken
    ({"if": ["small", "known", {"get_resource": "web2"}]}, UNKNOWN),
    ({"if": [{"equals": [{"get_param": "OS::stack_id"}, "x"]}, 1, 2]}, UNKNOWN),
    ({"and": ["small", {"equals": [{"get_resource": "web2"}, "1"]}]}, False),  # false and unknown: false
    ({"or": ["prod", {"equals": [{"get_resource": "web2"}, "1"]}]}, True),  # true or unknown: true
    ({"and": ["prod", {"equals": [{"get_resource": "web2"}, "1"]}]}, UNKNOWN),
    ({"repeat": {"for_each": {"%x%": ["a"]}, "template": {"id": {"get_resource": "web2"}}}}, UNKNOWN),
    ({"get_param": "OS::stack_name"}, UNKNOWN),  # a pseudo parameter not bound yet
    ({"get_param": ["conf", {"get_resource": "web2"}]}, UNKNOWN),
]


@pytest.mark.parametrize(("value", "expected"), UNKNOWNS)
def test_unknown_propagates(value: Any, expected: Any) -> None:
    assert resolve(value, ctx(PARAMS, {"prod": True, "small": False})) == expected


def test_unknown_is_one_marker() -> None:
    assert repr(UNKNOWN) == "<known after apply>"
    assert copy.deepcopy({"a": UNKNOWN})["a"] is UNKNOWN
    assert pickle.loads(pickle.dumps(UNKNOWN)) is UNKNOWN
    assert functions.has_unknown([{"a": (1, UNKNOWN)}]) and not functions.has_unknown({"a": [1]})


# (value, path, message) runtime errors with their path
RUNTIME_ERRORS = [
    ({"p": {"get_param": ["tags", 5]}}, "props.p.get_param", "index 5 out of range (the list has 2 items)"),
    ({"p": {"get_param": ["conf", "nope"]}}, "props.p.get_param", "no key 'nope' (keys: db)"),
    ({"p": {"get_param": ["port", "x"]}}, "props.p.get_param", "cannot look up 'x' in 8080"),
    ({"p": {"get_param": ["tags", "first"]}}, "props.p.get_param", "a list is indexed by an integer"),
    ({"p": {"get_param": "ghost"}}, "props.p.get_param", "parameter 'ghost' has no value"),
    ({"p": {"get_attr": ["web", "addresses", 3]}}, "props.p.get_attr", "index 3 out of range"),
    ({"p": [{"list_join": [",", {"get_param": "name"}]}]}, "props.p[0].list_join[1]", "list_join joins lists"),
    ({"p": {"str_replace": {"template": {"get_param": "port"}, "params": {"a": "b"}}}},
     "props.p.str_replace.template", "the template is a string, not 8080"),
    ({"p": {"if": [{"get_param": "name"}, 1, 2]}}, "props.p.if[0]", 'a condition must give true or false, not "web"'),
    ({"p": {"if": ["ghost", 1, 2]}}, "props.p.if[0]", "unknown condition 'ghost'"),
    ({"p": {"repeat": {"for_each": {"%a%": {"get_param": "name"}}, "template": "%a%"}}},
     "props.p.repeat.for_each.%a%", 'repeat needs a list, not "web"'),
    ({"p": {"repeat": {"for_each": {"%a%": [1], "%b%": [1, 2]}, "template": "%a%", "permutations": False}}},
     "props.p.repeat.for_each", "with permutations: false every list must have the same length"),
    ({"p": {"yaql": {"expression": "1"}}}, "props.p.yaql", "unknown function 'yaql'"),
    ({"p": {"repeat": {"for_each": {"a": list(range(100)), "b": list(range(101))}, "template": "ab"}}},
     "props.p.repeat", "repeat would make 10100 items; at most 10000"),
]


@pytest.mark.parametrize(("value", "path", "message"), RUNTIME_ERRORS)
def test_runtime_errors_name_their_path(value: Any, path: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        resolve(value, ctx(PARAMS, {"prod": True}), "props")
    ((problem),) = caught.value.problems
    assert problem.path == path and message in problem.message, problem


def test_get_attr_through_null_is_null() -> None:
    context = Context(params={}, conditions={}, resource_id=known, attribute=lambda name, path: None)
    assert resolve({"get_attr": ["web", "addresses", 0, "ip"]}, context) is None


def test_references() -> None:
    value = {"a": {"get_resource": "db"}, "b": [{"get_attr": ["lb", "ip", {"get_attr": ["cfg", "key"]}]}],
             "c": {"if": ["x", {"get_resource": "one"}, {"get_resource": "two"}]}, "d": {"get_param": "db"}}
    assert references(value) == {"db", "lb", "cfg", "one", "two"}
    assert functions.references is template.references


# ---------------------------------------------------------------------------------------- conditions


def test_conditions_in_properties_and_outputs(hot: template.Template) -> None:
    bound = bind_parameters(hot, {"admin_password": "Secret123", "env": "prod"})
    conditions = evaluate_conditions(hot, bound)
    assert conditions == {"is_prod": True, "not_prod": False, "big": True}
    context = ctx(bound, conditions)
    web = resolve(hot.resources["web"].properties, context)
    assert web == {"image": "nginx:1.25", "hostname": "web-prod-a", "address": "10.0.0.5", "size": "large",
                   "password": "Secret123", "labels": [{"zone": "a"}, {"zone": "b"}]}
    assert resolve(hot.resources["name"].properties, context) == {"name": "www.prod.example.org", "target": "ip-7"}
    assert resolve(hot.resources["web"].metadata, context) == {"stack": UNKNOWN}  # no stack name bound yet
    assert {n: resolve(o.value, context) for n, o in hot.outputs.items()} == {
        "url": "http://10.0.0.9/", "record": "rec-1", "mode": "production", "login": "admin:Secret123"}
    assert list(graph.active_resources(hot, conditions)) == ["address", "web", "name"]

    bound = bind_parameters(hot, {"admin_password": "Secret123", "flavor": "large"})
    conditions = evaluate_conditions(hot, bound)
    assert conditions == {"is_prod": False, "not_prod": True, "big": True}
    assert resolve(hot.outputs["mode"].value, ctx(bound, conditions)) == "development"
    assert list(graph.active_resources(hot, conditions)) == ["address", "web"]
    assert [graph.is_active(o, conditions) for o in hot.outputs.values()] == [True, False, True, True]
    assert graph.layers(hot, conditions) == [["address"], ["web"]]


def test_inline_and_literal_conditions_on_resources_and_outputs() -> None:
    parsed = parse(tmpl(
        {"a": system(condition={"equals": [{"get_param": "n"}, 2]}), "b": system(condition=True),
         "c": system(condition=False), "d": system(condition={"not": "later"})},
        parameters={"n": {"type": "number"}, "flag": {"type": "boolean", "default": True}},
        conditions={"later": {"get_param": "flag"}},
        outputs={"o": {"value": 1, "condition": {"and": ["later", True]}}}), resource_types=TYPES)
    assert [r.condition for r in parsed.resources.values()] == ["@resources.a", None, "@resources.c",
                                                               "@resources.d"]
    assert parsed.outputs["o"].condition == "@outputs.o"
    conditions = evaluate_conditions(parsed, bind_parameters(parsed, {"n": "2"}))
    assert conditions == {"later": True, "@resources.a": True, "@resources.c": False, "@resources.d": False,
                          "@outputs.o": True}
    assert list(graph.active_resources(parsed, conditions)) == ["a", "b"]


def test_condition_errors_at_evaluation_name_the_condition() -> None:
    parsed = parse(tmpl(parameters={"s": {"type": "string", "default": "x"}}, conditions={"c": {"get_param": "s"}},
                        resources={"a": system(condition={"get_param": "s"})}), resource_types=TYPES)
    with pytest.raises(TemplateError) as caught:
        evaluate_conditions(parsed, {"s": "x"})
    assert str(caught.value) == 'conditions.c: a condition must give true or false, not "x"'
    with pytest.raises(TemplateError) as caught:
        evaluate_conditions(parsed, {})
    assert str(caught.value) == "conditions.c.get_param: parameter 's' has no value"


# ---------------------------------------------------------------------------------------- parameters


def declared(kind: str, **extra: Any) -> template.Template:
    return parse(tmpl(parameters={"p": {"type": kind, **extra}}), resource_types=TYPES)


# (type, declaration extras, supplied, bound value or the error message)
BINDING = [
    ("string", {}, "x", "x"),
    ("string", {}, 5, "5"),
    ("string", {}, True, "true"),
    ("string", {}, {"a": 1}, 'parameters.p: {"a": 1} is not a string'),
    ("number", {}, "3", 3),
    ("number", {}, " 2.5 ", 2.5),
    ("number", {}, 7, 7),
    ("number", {}, "3x", 'parameters.p: "3x" is not a number'),
    ("number", {}, True, "parameters.p: true is not a number"),
    ("number", {}, "nan", 'parameters.p: "nan" is not a number'),
    ("boolean", {}, "yes", True),
    ("boolean", {}, "Off", False),
    ("boolean", {}, 1, True),
    ("boolean", {}, False, False),
    ("boolean", {}, "maybe", 'parameters.p: "maybe" is not a boolean (true or false)'),
    ("json", {}, '{"a": [1]}', {"a": [1]}),
    ("json", {}, [1, 2], [1, 2]),
    ("json", {}, "3", "parameters.p: \"3\" is not a JSON mapping or list"),
    ("json", {}, "{", "parameters.p: the text is not JSON"),
    ("comma_delimited_list", {}, "a, b ,c", ["a", "b", "c"]),
    ("comma_delimited_list", {}, "", []),
    ("comma_delimited_list", {}, ["x", 2], ["x", "2"]),
    ("comma_delimited_list", {}, [["x"]], 'parameters.p: [["x"]] is not a comma-delimited list'),
    ("string", {"default": "d"}, None, "d"),
    ("string", {}, None, "parameters.p: required: the parameter has no default"),
    ("string", {"constraints": [{"allowed_values": ["a", "b"]}]}, "b", "b"),
    ("string", {"constraints": [{"allowed_values": ["a", "b"]}]}, "c",
     'parameters.p: "c" is not one of the allowed values: "a", "b"'),
    ("string", {"constraints": [{"allowed_values": ["a"], "description": "pick a"}]}, "c", "parameters.p: pick a"),
    ("number", {"constraints": [{"allowed_values": [1, 2]}]}, "2", 2),
    ("comma_delimited_list", {"constraints": [{"allowed_values": ["a", "b"]}]}, "a,c",
     'parameters.p: "c" is not one of the allowed values'),
    ("number", {"constraints": [{"range": {"min": 1, "max": 3}}]}, 3, 3),
    ("number", {"constraints": [{"range": {"min": 1, "max": 3}}]}, 4, "parameters.p: 4 must be between 1 and 3"),
    ("number", {"constraints": [{"range": {"min": 1}}]}, 0, "parameters.p: 0 must be at least 1"),
    ("number", {"constraints": [{"range": {"max": 1}}]}, 2.5, "parameters.p: 2.5 must be at most 1"),
    ("string", {"constraints": [{"length": {"min": 2, "max": 3}}]}, "abcd",
     "parameters.p: the length must be between 2 and 3 characters (it is 4)"),
    ("comma_delimited_list", {"constraints": [{"length": {"min": 2}}]}, "a",
     "parameters.p: the length must be at least 2 items (it is 1)"),
    ("json", {"constraints": [{"length": {"max": 1}}]}, {"a": 1, "b": 2},
     "parameters.p: the length must be at most 1 items (it is 2)"),
    ("string", {"constraints": [{"allowed_pattern": "[a-z]+"}]}, "abc", "abc"),
    ("string", {"constraints": [{"allowed_pattern": "[a-z]+"}]}, "abc1",
     'parameters.p: "abc1" does not match the pattern [a-z]+'),
    ("number", {"constraints": [{"modulo": {"step": 2, "offset": 1}}]}, 7, 7),
    ("number", {"constraints": [{"modulo": {"step": 2, "offset": 1}}]}, 8, "parameters.p: 8 is not 1 modulo 2"),
    ("string", {"hidden": True, "constraints": [{"length": {"min": 9}}]}, "hunter2",
     "parameters.p: the length must be at least 9 characters (it is 7)"),
    ("string", {"hidden": True, "constraints": [{"allowed_pattern": "[0-9]+"}]}, "hunter2",
     "parameters.p: the value does not match the pattern [0-9]+"),
    ("number", {"hidden": True}, "hunter2", "parameters.p: the value is not a number"),
    # catastrophic backtracking (~2^28 paths) is cut off, not left to hold a server thread
    ("string", {"constraints": [{"allowed_pattern": "(a|aa)+"}]}, "a" * 40 + "!",
     'parameters.p: "' + "a" * 40 + '!" took longer than 50 ms to match the pattern (a|aa)+'),
]


@pytest.mark.parametrize(("kind", "extra", "supplied", "expected"), BINDING)
def test_bind_parameters(kind: str, extra: dict, supplied: Any, expected: Any) -> None:
    parsed = declared(kind, **extra)
    values = {} if supplied is None else {"p": supplied}
    if isinstance(expected, str) and expected.startswith("parameters.p:"):
        with pytest.raises(TemplateError) as caught:
            bind_parameters(parsed, values)
        assert str(caught.value).startswith(expected)
        assert "hunter2" not in str(caught.value)
    else:
        assert bind_parameters(parsed, values) == {"p": expected}


def test_binding_reports_every_problem_and_adds_pseudo_parameters() -> None:
    parsed = parse(tmpl(parameters={"a": {"type": "number"}, "b": {"type": "string"},
                                    "c": {"type": "string", "default": "x"}}), resource_types=TYPES)
    with pytest.raises(TemplateError) as caught:
        bind_parameters(parsed, {"a": "one", "z": 1})
    assert str(caught.value).splitlines() == [
        "parameters.z: the template declares no such parameter (declared: a, b, c)",
        'parameters.a: "one" is not a number',
        "parameters.b: required: the parameter has no default"]
    bound = bind_parameters(parsed, {"a": 1, "b": "y"}, stack_name="shop", stack_id="17")
    assert bound == {"a": 1, "b": "y", "c": "x", "OS::stack_name": "shop", "OS::stack_id": "17"}
    assert resolve({"get_param": "OS::stack_name"}, ctx(bound)) == "shop"


# (value, secrets, redacted)
REDACTIONS = [
    ("pw=hunter2!", ["hunter2"], "pw=******!"),
    ({"hunter2": ["x hunter2 y", 3]}, ["hunter2"], {"******": ["x ****** y", 3]}),
    (("hunter2",), ["hunter2"], ("******",)),
    ("abcabc", ["abc", "abcabc"], "******"),  # the longest secret first
    ("a-b", ["a", "b"], "******-******"),
    (1234, ["1234"], "******"),
    (12345, [1234], 12345),
    ("no secret", ["", None, True], "no secret"),  # empty and non-text secrets are ignored
    ("a.b", ["."], "a******b"),  # secrets are text, not patterns
    (None, ["x"], None),
]


@pytest.mark.parametrize(("value", "secrets", "expected"), REDACTIONS)
def test_redact(value: Any, secrets: list, expected: Any) -> None:
    assert redact(value, secrets) == expected


def test_secret_values_cover_hidden_lists_and_json() -> None:
    parsed = parse(tmpl(parameters={"k": {"type": "comma_delimited_list", "hidden": True},
                                    "j": {"type": "json", "hidden": True}, "open": {"type": "string"}}),
                   resource_types=TYPES)
    bound = bind_parameters(parsed, {"k": "key1,key2", "j": {"token": "tok9"}, "open": "public"})
    secrets = secret_values(parsed, bound)
    assert {"key1", "key2", "tok9"} <= set(secrets) and "public" not in secrets
    assert redact({"out": "key1 key2 tok9 public"}, secrets) == {"out": "****** ****** ****** public"}
    assert parameters.REDACTED == "******"


# --------------------------------------------------------------------------------------------- graph


def test_layers_dependents_and_inactive_edges() -> None:
    parsed = parse(tmpl({
        "net": system(), "dns": system(properties={"ip": {"get_attr": ["vm", "ip"]}}),
        "vm": system(depends_on="net", condition="on"), "db": system(depends_on=["net"]),
        "app": system(properties={"db": {"get_resource": "db"}, "vm": {"get_resource": "vm"}}),
    }, conditions={"on": {"get_param": "enabled"}}, parameters={"enabled": {"type": "boolean", "default": True}}),
        resource_types=TYPES)
    assert graph.layers(parsed) == [["net"], ["db", "vm"], ["app", "dns"]]
    assert graph.layers(parsed, {"on": True}) == [["net"], ["db", "vm"], ["app", "dns"]]
    assert graph.layers(parsed, {"on": False}) == [["dns", "net"], ["db"], ["app"]]  # edges to vm dropped
    assert graph.dependents(parsed) == {"net": {"vm", "db"}, "dns": set(), "vm": {"dns", "app"}, "db": {"app"},
                                        "app": set()}
    assert graph.delete_layers(parsed, {"on": True}) == [["app", "dns"], ["db", "vm"], ["net"]]


@pytest.mark.parametrize(("edges", "cycle"), [
    ({}, None),
    ({"a": ["b"], "b": []}, None),
    ({"a": ["b", "c"], "b": ["c"], "c": []}, None),  # a diamond is not a cycle
    ({"a": ["a"]}, ["a", "a"]),
    ({"b": ["c"], "c": ["b"], "a": ["b"]}, ["b", "c", "b"]),
    ({"a": ["x"], "x": ["y"], "y": ["z"], "z": ["x"]}, ["x", "y", "z", "x"]),
    ({"a": ["ghost"]}, None),
])
def test_find_cycle(edges: dict, cycle: list[str] | None) -> None:
    assert graph.find_cycle(edges) == cycle


def test_a_long_chain_does_not_hit_the_recursion_limit() -> None:
    resources = {f"r{i}": system(depends_on=[f"r{i - 1}"] if i else []) for i in range(3000)}
    parsed = parse(tmpl(resources), resource_types=TYPES)
    assert len(graph.layers(parsed)) == 3000


def test_get_attr_names_are_checked_when_the_types_say_theirs() -> None:
    source = tmpl({"a": system(), "b": system(properties={"x": {"get_attr": ["a", "ip"]},
                                                          "y": {"get_attr": ["a", "address"]}})})
    with pytest.raises(TemplateError) as caught:
        parse(source, resource_types=TYPES, attributes={"Armillary::System": ("id", "address")})
    assert str(caught.value) == "resources.b.properties.x.get_attr[1]: Armillary::System has no attribute 'ip'; " \
                                "it has id, address"
    assert parse(source, resource_types=TYPES).resources["b"].depends_on == ("a",)


def test_json_text_is_read_like_yaml() -> None:
    text = '{"armillary_template_version": 1, "resources": {"a": {"type": "Armillary::System"}}}'
    assert list(parse(text, resource_types=TYPES).resources) == ["a"]
    ((_, message),) = problems('{"armillary_template_version": 1, "resources": {}, "resources": {}}')
    assert message == "invalid YAML: line 1, column 52: duplicate key 'resources'"


def test_the_reference_example_parses_and_plans() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "stacks-templates.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    parsed = parse(example, resource_types=TYPES)
    bound = bind_parameters(parsed, {"env": "prod"})
    conditions = evaluate_conditions(parsed, bound)
    assert graph.layers(parsed, conditions) == [["address", "web"], ["name"]]
    assert resolve(parsed.outputs["url"].value, ctx(bound, conditions)) == "http://10.0.0.5/"

"""Template language benchmark (issue 19): the pure part of a plan for a generated template of 1,000
``Armillary::System`` resources in 10 dependency layers — ``parse`` (from YAML text and from a mapping),
``bind_parameters``, ``evaluate_conditions``, ``layers`` and ``resolve`` of every resource's properties
(the ids of the resources are known, as in the plan of an unchanged stack). Target: well under 0.3 s in
total on this 2-core machine (the whole plan, with the database, must answer in under 1 s).

    .venv/bin/python bench/stacks_template.py [resources] [layers]
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import yaml

from armillary.stacks import functions, graph, parameters, template

TYPES = ("Armillary::System",)


def generate(count: int, depth: int) -> dict[str, Any]:
    """``count`` systems in ``depth`` layers; each system of layer k>0 references one of layer k-1."""
    per_layer = count // depth
    resources: dict[str, Any] = {}
    for i in range(count):
        layer = min(i // per_layer, depth - 1)
        props: dict[str, Any] = {
            "image": {"get_param": "image"},
            "hostname": {"str_replace": {"template": "web-ENV-N", "params": {"ENV": {"get_param": "env"},
                                                                             "N": str(i)}}},
            "size": {"if": ["prod", "large", "small"]},
            "labels": {"tier": f"t{layer}", "zones": {"get_param": "zones"}},
            "disk_gb": 20,
        }
        if layer:
            parent = f"sys{(layer - 1) * per_layer + i % per_layer}"
            props["after"] = {"get_resource": parent}
            props["peer"] = {"list_join": [":", [{"get_attr": [parent, "address"]}, "22"]]}
        resources[f"sys{i}"] = {"type": "Armillary::System", "properties": props}
    return {
        "heat_template_version": "2021-04-16",
        "parameters": {
            "image": {"type": "string", "default": "alpine:3.19"},
            "env": {"type": "string", "default": "dev", "constraints": [{"allowed_values": ["dev", "prod"]}]},
            "zones": {"type": "comma_delimited_list", "default": "a,b"},
            "password": {"type": "string", "hidden": True, "default": "s3cret-pw"},
        },
        "conditions": {"prod": {"equals": [{"get_param": "env"}, "prod"]}},
        "resources": resources,
        "outputs": {"first": {"value": {"get_attr": ["sys0", "address"]}}},
    }


def best(run: Callable[[], Any], repeat: int = 7) -> tuple[float, float, Any]:
    """(least CPU seconds, median wall seconds) of ``repeat`` runs, and the last result. CPU time is the
    figure to compare: this machine's cores are shared, so wall time swings with the neighbours' load."""
    cpu, wall, result = [], [], None
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = run()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return min(cpu), statistics.median(wall), result


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    depth = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    source = generate(count, depth)
    text = yaml.safe_dump(source, sort_keys=False)
    ids = {f"sys{i}": i + 1 for i in range(count)}

    def attribute(name: str, path: tuple[Any, ...]) -> Any:
        return f"10.0.{ids[name] // 250}.{ids[name] % 250}"

    rows: list[tuple[str, float, float]] = []
    lo, med, tmpl = best(lambda: template.parse(text, resource_types=TYPES))
    rows.append((f"parse (YAML text, {len(text) // 1024} KiB)", lo, med))
    as_json = json.dumps(source)
    lo, med, _ = best(lambda: template.parse(as_json, resource_types=TYPES))
    rows.append((f"parse (JSON text, {len(as_json) // 1024} KiB)", lo, med))
    lo, med, _ = best(lambda: template.parse(source, resource_types=TYPES))
    rows.append(("parse (mapping, as stored)", lo, med))
    lo, med, params = best(lambda: parameters.bind_parameters(tmpl, {"env": "prod"}))
    rows.append(("bind_parameters", lo, med))
    lo, med, conditions = best(lambda: functions.evaluate_conditions(tmpl, params))
    rows.append(("evaluate_conditions", lo, med))
    lo, med, order = best(lambda: graph.layers(tmpl, conditions))
    rows.append((f"layers ({len(order)} layers)", lo, med))
    ctx = functions.Context(params=params, conditions=conditions, resource_id=ids.__getitem__, attribute=attribute)
    lo, med, resolved = best(lambda: [functions.resolve(r.properties, ctx) for r in tmpl.resources.values()])
    rows.append((f"resolve ({len(resolved)} resources' properties)", lo, med))
    secrets = parameters.secret_values(tmpl, params)
    lo, med, _ = best(lambda: parameters.redact(resolved, secrets))
    rows.append(("redact (all resolved properties)", lo, med))

    print(f"{count} resources in {depth} layers")
    for name, lo, med in rows:
        print(f"  {name:<44} cpu {lo * 1000:7.1f} ms   wall (median) {med * 1000:7.1f} ms")
    rest = [(lo, med) for name, lo, med in rows[3:] if not name.startswith("redact")]
    for label, parse_row in (("YAML text", rows[0]), ("mapping", rows[2])):
        lo = parse_row[1] + sum(r[0] for r in rest)
        med = parse_row[2] + sum(r[1] for r in rest)
        print(f"  total, parse from {label + ' + bind + layers + resolve':<26} cpu {lo * 1000:7.1f} ms   "
              f"wall (median) {med * 1000:7.1f} ms")

if __name__ == "__main__":
    main()

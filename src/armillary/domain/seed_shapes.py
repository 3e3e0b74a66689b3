"""Translation of the seed formats into Armillary's canonical input shapes.

The systems we learn from describe things in their own YAML:

* a type as ``{type: redis, puppet-std: {module: {...}, args: []}, classes: {redis: {...}}}``;
* a system as ``{env: dev, machine: {hostname: red1, user: ubuntu, os: ...}, aws: {...}, type: redis}``,
  where the key named after a driver holds the driver properties and picks the hypervisor.

Canonical input passes through untouched; these functions only rename keys, they never
resolve references (that needs the database and happens in the API layer).
"""

from __future__ import annotations

from typing import Any

# Seed provisioner section names → Armillary provisioner kinds.
SEED_PROVISIONERS = {
    "puppet-std": "puppet",
    "puppet": "puppet",
    "ansible": "ansible",
    "salt": "salt",
    "script": "script",
    "shell": "script",
}


def type_from_seed(data: Any) -> Any:
    """``{type: NAME, <provisioner>: SPEC, classes: ...}`` → ``{name, provisioner: {kind, spec}}``."""
    if not isinstance(data, dict) or "name" in data or "type" not in data:
        return data
    data = dict(data)
    out: dict[str, Any] = {"name": data.pop("type")}
    for key in ("description", "variables"):
        if key in data:
            out[key] = data.pop(key)
    if "defaults" in data:
        out["variables"] = data.pop("defaults")
    kinds = [key for key in data if key in SEED_PROVISIONERS]
    if len(kinds) > 1:
        raise ValueError(f"a type takes one provisioner section, found {', '.join(kinds)}")
    if kinds:
        section = data.pop(kinds[0])
        spec = dict(section) if isinstance(section, dict) else {"value": section}
        # The seed keeps puppet classes beside the provisioner section; they belong to its spec.
        if "classes" in data:
            spec["classes"] = data.pop("classes")
        out["provisioner"] = {"kind": SEED_PROVISIONERS[kinds[0]], "spec": spec}
    out.update(data)  # whatever is left is reported as an unknown field by validation
    return out


SYSTEM_FIELDS = frozenset(
    {"hostname", "environment", "hypervisor", "driver_name", "type", "machine", "driver", "labels", "variables"}
)


def system_from_seed(data: Any) -> Any:
    """``{env, machine: {hostname, ...}, <driver>: PROPS, type}`` → the canonical system shape.

    A document is in the seed shape when its hostname sits inside ``machine``. Its one key that is
    not a system field and holds a mapping is the driver section: its name is the driver's name
    (checked against the installed drivers by the API, which knows them; the domain does not).
    """
    if not isinstance(data, dict) or "hostname" in data:
        return data
    machine = data.get("machine")
    if not (isinstance(machine, dict) and "hostname" in machine):
        return data
    data = dict(data)
    machine = dict(machine)
    data["hostname"] = machine.pop("hostname")
    data["machine"] = machine
    if "env" in data and "environment" not in data:
        data["environment"] = data.pop("env")
    sections = [key for key, value in data.items() if key not in SYSTEM_FIELDS and isinstance(value, dict)]
    if len(sections) == 1 and "driver" not in data:
        name = sections[0]
        data["driver"] = data.pop(name)
        data.setdefault("driver_name", name)
    return data

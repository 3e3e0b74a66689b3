"""Running one check against one system: ``run_check(ctx, system, check, variables) -> CheckResult``.

``ctx`` is the job step's context narrowed to the system (``dataclasses.replace(ctx, system_id=...)``), so
the transport is the one the system's driver names, opened as provisioning opens it (``transport_for``:
host keys pinned, first contact recorded). What decides ``error`` (could not check) rather than ``fail``:
the machine could not be reached (a transport or driver failure, a timeout), the tool could not run the
check, or a facts expression names something the machine did not report. ``fail`` is only ever "the machine
was looked at and is not as it should be".
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from armillary.audits.models import CheckKind, Outcome
from armillary.audits.specs import CommandSpec, DriftSpec, FactsSpec, compile_expression
from armillary.drivers.base import MachineState
from armillary.engine.transports import transport_for
from armillary.failures import Failure
from armillary.provisioners.base import provisioners
from armillary.provisioners.script import build_env
from armillary.sources import Roots

EVIDENCE_CHARS = 4000
# States in which the inventory expects a running machine.
EXPECT_RUNNING = frozenset({"created", "ready", "provisioning", "deploying"})
EXPECT_NONE = frozenset({"defined", "destroyed"})


@dataclass
class CheckResult:
    status: Outcome
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    duration_ms: int = 0


def run_check(ctx: Any, system: Any, kind: str, spec: dict[str, Any], variables: dict[str, Any]) -> CheckResult:
    """Run one check; never raises for the machine's sake (an unreachable machine is an ``error`` result)."""
    started = time.monotonic()
    try:
        result = _RUNNERS[kind](ctx, system, spec, variables)
    except Failure as exc:  # transport, driver, provisioner failures: the machine could not be checked
        result = CheckResult(Outcome.ERROR, _short(str(exc)), {"error": _short(str(exc), EVIDENCE_CHARS)})
    except Exception as exc:  # noqa: BLE001 - a bug in one check must not end the audit
        result = CheckResult(Outcome.ERROR, _short(f"{type(exc).__name__}: {exc}"), {"error": repr(exc)[:1000]})
    result.duration_ms = int((time.monotonic() - started) * 1000)
    return result


def _short(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _env(system: Any, variables: dict[str, Any], extra: dict[str, str]) -> dict[str, str]:
    env, _ = build_env(variables, extra)
    env.update({"ARMILLARY_SYSTEM_ID": str(system.id), "ARMILLARY_HOSTNAME": system.hostname,
                "ARMILLARY_ENVIRONMENT": system.environment.name})
    return env


# ---------------------------------------------------------------- command


def _command(ctx: Any, system: Any, spec: dict[str, Any], variables: dict[str, Any]) -> CheckResult:
    parsed = CommandSpec.model_validate(spec)
    with transport_for(ctx, system) as transport:
        result = transport.run(parsed.argv(), env=_env(system, variables, parsed.env),
                               timeout=min(parsed.timeout, max(1.0, ctx.remaining() - 1)))
    output = result.output_tail
    evidence = {"exit_code": result.exit_code, "output": output[-EVIDENCE_CHARS:]}
    if result.exit_code not in parsed.exits():
        return CheckResult(Outcome.FAIL, f"exit status {result.exit_code}, expected {parsed.expect_exit}"
                           + (f": {_short(output, 200)}" if output else ""), evidence)
    if parsed.expect_pattern and not re.search(parsed.expect_pattern, output, re.MULTILINE):
        return CheckResult(Outcome.FAIL, f"output does not match {parsed.expect_pattern!r}", evidence)
    if parsed.fail_pattern and re.search(parsed.fail_pattern, output, re.MULTILINE):
        return CheckResult(Outcome.FAIL, f"output matches {parsed.fail_pattern!r}", evidence)
    return CheckResult(Outcome.PASS, f"exit status {result.exit_code}", evidence)


# ---------------------------------------------------------------- ansible check mode


class _TaskRecorder:
    """The step context as the Ansible provisioner sees it, noting every task result it logs."""

    def __init__(self, ctx: Any) -> None:
        self._ctx = ctx
        self.tasks: list[dict[str, Any]] = []

    def log(self, message: str, level: str = "info", **data: Any) -> None:
        if data.get("status") and data.get("task"):
            self.tasks.append({"task": data["task"], "status": data["status"], "msg": data.get("msg")})
        self._ctx.log(message, level=level, **data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def _ansible(ctx: Any, system: Any, spec: dict[str, Any], variables: dict[str, Any]) -> CheckResult:
    recorder = _TaskRecorder(ctx)
    counts = provisioners()["ansible"]().run(
        recorder, system, {**spec, "check": True, "diff": True}, variables,
        connect=lambda: transport_for(ctx, system), roots=Roots.from_settings(ctx.runtime.settings),
    )
    changed = [t for t in recorder.tasks if t["status"] == "changed"]
    evidence = {"counts": counts, "tasks": recorder.tasks[:200]}
    if changed:
        names = ", ".join(dict.fromkeys(t["task"] for t in changed))
        return CheckResult(Outcome.FAIL, _short(f"{len(changed)} task(s) would change: {names}"), evidence)
    return CheckResult(Outcome.PASS, f"no task would change ({counts.get('ok', 0)} ok)", evidence)


# ---------------------------------------------------------------- facts

FACT_SCRIPT = {
    "os": '. /etc/os-release 2>/dev/null; echo "os.id $ID"; echo "os.version $VERSION_ID"; echo "os.name $PRETTY_NAME"',
    "kernel": 'echo "kernel $(uname -r)"',
    "packages": "(dpkg-query -W -f='pkg ${Package} ${Version}\\n' 2>/dev/null || "
                "rpm -qa --qf 'pkg %{NAME} %{VERSION}-%{RELEASE}\\n' 2>/dev/null) || true",
    "ports": "(ss -Htln 2>/dev/null || true) | while read -r _ _ _ local _; do echo \"port ${local##*:}\"; done",
    "disk": "df -P -k 2>/dev/null | while read -r _ size used _ pct mount; do "
            "case $size in *[!0-9]*|'') continue;; esac; echo \"disk $mount $size $used ${pct%\\%}\"; done",
}


def parse_facts(lines: list[str]) -> dict[str, Any]:
    """The machine's facts from the gathering script's lines (``os.id debian``, ``port 22``...)."""
    facts: dict[str, Any] = {}
    for line in lines:
        key, _, value = line.strip().partition(" ")
        if key.startswith("os."):
            facts.setdefault("os", {})[key[3:]] = value.strip().strip('"')
        elif key == "kernel":
            facts["kernel"] = value.strip()
        elif key == "pkg":
            name, _, version = value.partition(" ")
            facts.setdefault("packages", {})[name] = version
        elif key == "port" and value.strip().isdigit():
            ports = facts.setdefault("ports", [])
            if int(value) not in ports:
                ports.append(int(value))
        elif key == "disk":
            parts = value.split()
            if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
                facts.setdefault("disk", {})[parts[0]] = {"size_kb": int(parts[1]), "used_kb": int(parts[2]),
                                                          "used_pct": int(parts[3])}
    return facts


def gather_facts(ctx: Any, system: Any, groups: list[str], timeout: float) -> dict[str, Any]:
    lines: list[str] = []
    script = "\n".join(FACT_SCRIPT[g] for g in groups)
    with transport_for(ctx, system) as transport:
        result = transport.run(["/bin/sh", "-c", script], timeout=timeout,
                               on_line=lambda line, stream: lines.append(line) if stream == "stdout" else None)
    if result.exit_code != 0:
        raise _GatherFailed(f"gathering facts exited {result.exit_code}: {_short(result.output_tail)}")
    facts = parse_facts(lines)
    for group in groups:  # asked for and not found: an empty value, not an undefined name
        facts.setdefault(group, {} if group in ("os", "packages", "disk") else [] if group == "ports" else "")
    return facts


class _GatherFailed(Failure):
    transient = False


def _facts(ctx: Any, system: Any, spec: dict[str, Any], variables: dict[str, Any]) -> CheckResult:
    from jinja2 import UndefinedError
    from jinja2.exceptions import SecurityError

    parsed = FactsSpec.model_validate(spec)
    facts = gather_facts(ctx, system, list(parsed.gather), parsed.timeout)
    if parsed.write_back:
        _write_back(ctx, facts)
    scope = {"facts": facts, "vars": variables,
             "system": {"hostname": system.hostname, "os": system.os, "cpu": system.cpu,
                        "memory_mb": system.memory_mb, "environment": system.environment.name}}
    results, failed = [], []
    for expression in parsed.expect:
        try:
            value = compile_expression(expression)(**scope)
        except (UndefinedError, SecurityError, TypeError, ValueError) as exc:
            return CheckResult(Outcome.ERROR, _short(f"{expression}: {exc}"),
                               {"facts": _shown(facts), "expressions": results, "error": str(exc)[:1000]})
        results.append({"expression": expression, "result": bool(value)})
        if not value:
            failed.append(expression)
    evidence = {"facts": _shown(facts), "expressions": results}
    if failed:
        return CheckResult(Outcome.FAIL, _short("false: " + "; ".join(failed)), evidence)
    return CheckResult(Outcome.PASS, f"{len(results)} expression(s) true", evidence)


def _write_back(ctx: Any, facts: dict[str, Any]) -> None:
    """Keep the facts on the system (variables ``facts.<key>``), named after the audit (or remediation) run."""
    params = getattr(ctx, "params", {}) or {}
    source = f"audit {params['audit']}" if params.get("audit") else f"remediation {params.get('remediation', '?')}"
    ctx.update_system(facts={k: v for k, v in facts.items() if k != "packages"}, facts_source=source[:127])


def _shown(facts: dict[str, Any]) -> dict[str, Any]:
    """Facts as evidence: the package list is counted, not copied into every finding."""
    shown = dict(facts)
    if isinstance(shown.get("packages"), dict):
        shown["packages"] = {"count": len(shown["packages"])}
    return shown


# ---------------------------------------------------------------- machine drift


def _drift(ctx: Any, system: Any, spec: dict[str, Any], variables: dict[str, Any]) -> CheckResult:
    compare = DriftSpec.model_validate(spec).compare
    if system.provider_id is None and system.state in EXPECT_NONE:
        return CheckResult(Outcome.PASS, f"no machine expected ({system.state})", {"inventory": system.state})
    driver = ctx.driver(system)
    info = driver.status(ctx.machine_ref(system))
    details = info.details or {}
    actual = {"state": str(info.state), "addresses": list(info.addresses),
              **{k: details.get(k) for k in ("cpu", "memory_mb", "image") if details.get(k) is not None}}
    expected = {"state": system.state, "addresses": list(system.addresses or []), "cpu": system.cpu,
                "memory_mb": system.memory_mb, "image": (system.driver_props or {}).get("image")}
    evidence = {"actual": actual, "inventory": expected}
    if info.state == MachineState.UNREACHABLE:
        return CheckResult(Outcome.ERROR, f"machine {info.provider_id} cannot be reached", evidence)
    drift = _differences(compare, system, info, details, expected)
    evidence["drift"] = drift
    if drift:
        return CheckResult(Outcome.FAIL, _short("; ".join(d["message"] for d in drift)), evidence)
    return CheckResult(Outcome.PASS, f"machine {info.provider_id} matches the inventory", evidence)


def _differences(compare: list[str], system: Any, info: Any, details: dict[str, Any],
                 expected: dict[str, Any]) -> list[dict[str, Any]]:
    drift: list[dict[str, Any]] = []
    if info.state in (MachineState.MISSING, MachineState.TERMINATED):
        return [{"field": "state", "message": f"the machine is {info.state} (the inventory says {system.state})"}]
    if "state" in compare and system.state in EXPECT_RUNNING and info.state != MachineState.RUNNING:
        drift.append({"field": "state", "message": f"the machine is {info.state}, the inventory says {system.state}"})
    if "state" in compare and system.state == "stopped" and info.state == MachineState.RUNNING:
        drift.append({"field": "state", "message": "the machine runs, the inventory says stopped"})
    pairs = (("cpu", "cpu", "cpu"), ("memory", "memory_mb", "memory_mb"), ("image", "image", "image"))
    for name, key, label in pairs:
        if name in compare and expected[key] is not None and details.get(key) is not None \
                and details[key] != expected[key]:
            drift.append({"field": label, "message": f"{label} is {details[key]}, the inventory says {expected[key]}"})
    if "address" in compare and expected["addresses"] and info.addresses \
            and set(expected["addresses"]) != set(info.addresses):
        drift.append({"field": "addresses", "message": f"addresses are {', '.join(info.addresses)}, the inventory "
                                                       f"says {', '.join(expected['addresses'])}"})
    return drift


_RUNNERS = {
    CheckKind.COMMAND: _command,
    CheckKind.ANSIBLE: _ansible,
    CheckKind.FACTS: _facts,
    CheckKind.MACHINE_DRIFT: _drift,
}

"""Redaction benchmark: what a new secret costs a process that already holds many (``armillary.redaction``).

Every registered secret is masked in every log line, job event and step error. A process registers new
ones as it works: a system's secret variables at each provisioning run, a hypervisor's credentials, a
password being set. For ``--values`` already registered (1,000, 5,000 and 10,000: the registry's
bound), each scenario times, in this process:

* ``new``   — register one more value, then redact a line holding it (what a bulk job's next run pays);
* ``line``  — redact a 234-character line holding no secret (every log line and event pays it);
* ``build`` — the first redaction after registering them all at once (a full build).

The baseline measured in the same run is ``line``: ``new ÷ line`` says how many plain lines one new
secret costs. Before the Aho-Corasick registry, a new value rebuilt one regular expression of every
value: 88 ms at 1,000 values, 1.1 s at 10,000 (~20,000-500,000 lines).

    .venv/bin/python bench/redaction.py
    .venv/bin/python bench/redaction.py --values 10000 --rounds 2000

This is not part of the test suite.
"""

from __future__ import annotations

import argparse
import time
import uuid

from armillary.redaction import MASK, SecretRegistry

LINE = "TASK [web : install packages] changed: [web1] => (item=nginx) ok=12 changed=3 " * 3


def scenario(values: int, rounds: int) -> dict[str, float]:
    registry = SecretRegistry()
    registry.register(*[uuid.uuid4().hex for _ in range(values)])
    started = time.perf_counter()
    registry.redact_text(LINE)
    build_ms = (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    for _ in range(rounds):
        value = uuid.uuid4().hex
        registry.register(value)
        assert registry.redact_text(f"db_password={value}") == f"db_password={MASK}"
    new_ms = (time.perf_counter() - started) / rounds * 1000

    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(rounds * 10):
            assert registry.redact_text(LINE) == LINE
        best = min(best, (time.perf_counter() - started) / (rounds * 10) * 1000)
    return {"values": values, "build_ms": build_ms, "new_ms": new_ms, "line_ms": best, "ratio": new_ms / best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, action="append", help="secrets already registered (repeatable)")
    parser.add_argument("--rounds", type=int, default=1000, help="new secrets registered per scenario")
    args = parser.parse_args()
    print(f"{'values':>8}{'build ms':>10}{'new ms':>9}{'line µs':>9}{'new ÷ line':>12}")
    for values in args.values or [1000, 5000, 10_000]:
        r = scenario(values, args.rounds)
        print(f"{r['values']:>8}{r['build_ms']:>10.1f}{r['new_ms']:>9.3f}{r['line_ms'] * 1000:>9.2f}{r['ratio']:>12.0f}")


if __name__ == "__main__":
    main()

"""DNS registration overhead: ``Rfc2136Backend.ensure`` ÷ a hand-written dnspython update, same run.

Against ONE BIND 9 ``named`` started here by ``tests/support/bind9.py`` (loopback, a free port, its own
TSIG key and dynamic zone ``example.test.``), one thread, N registrations of each kind INTERLEAVED one by
one (direct, Armillary, Armillary, direct, …: who goes first alternates), so the load of a shared machine
hits both alike:

* **direct** — a signed update written by hand: ``dns.update.UpdateMessage`` with the TSIG key,
  ``replace(<new name>, 300, "A", <address>)``, sent with ``dns.query.tcp``; the rcode checked.
* **Armillary** — ``Rfc2136Backend.ensure(DnsRecord(<new name>, "A", 300, (<address>,)), owner)``:
  one update message too, but with two prerequisites (nothing at the name, no marker TXT beside it) and
  the ownership marker TXT added with the A; validation and normalization of the record in Python.

Each name is new (a registration, what the lifecycle does when a system is created). Printed: the median
and mean time per operation of each, and the ratios Armillary ÷ direct of the medians and of the means
(the issue's target is ≤ 1.2). Printed too, for information and without a baseline: a second ``ensure`` of
the same records (no change: the update sent for an empty name is refused by its prerequisites, then two
reads show the records are already right) and an address change (the same refusal and reads, then a
second update), which cost more round trips by design.

Run: ``.venv/bin/python bench/network_dns.py [-n 1000] [--json]`` (needs bind9: ``scripts/peers/dns.sh``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.tsig
import dns.update

from armillary.network.dns import DnsRecord, backend_for

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # for tests.support.bind9 (the peer)

OWNER = "system:1"


def address(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def direct_update(named, key: dns.tsig.Key, name: str, value: str) -> None:
    """One hand-written signed update."""
    update = dns.update.UpdateMessage(named.zone, keyring=key, keyname=key.name, keyalgorithm=key.algorithm)
    update.replace(name, 300, "A", value)
    response = dns.query.tcp(update, named.host, port=named.port, timeout=5)
    if response.rcode() != dns.rcode.NOERROR:
        raise RuntimeError(f"direct update of {name}: {dns.rcode.to_text(response.rcode())}")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def timed(call, *args) -> float:
    started = time.perf_counter()
    call(*args)
    return time.perf_counter() - started


def run(n: int, say) -> dict:
    from tests.support.bind9 import running_named

    with tempfile.TemporaryDirectory(prefix="bench-dns-") as work, running_named(Path(work)) as named:
        backend = backend_for("rfc2136", named.backend_config(timeout=5.0), named.zone)
        key = dns.tsig.Key(named.key_name, named.key_secret, named.algorithm)

        def ensure(name: str, value: str) -> None:
            backend.ensure(DnsRecord(name, "A", 300, (value,)), OWNER)

        for i in range(20):  # warm-up, outside the timing
            direct_update(named, key, f"warm-d{i}.{named.zone}", address(i))
            ensure(f"warm-a{i}.{named.zone}", address(i))
        direct, armillary = [], []
        for i in range(n):
            # One of each, who goes first alternating: a burst of load on a shared machine hits both alike.
            pair = [(direct, direct_update, (named, key, f"d{i}.{named.zone}", address(i))),
                    (armillary, ensure, (f"a{i}.{named.zone}", address(i)))]
            for times, call, args in (pair if i % 2 else pair[::-1]):
                times.append(timed(call, *args))
            if (i + 1) % max(1, n // 5) == 0:
                say(f"{i + 1}/{n}: direct {statistics.median(direct) * 1000:.2f} ms, "
                    f"Armillary {statistics.median(armillary) * 1000:.2f} ms (medians so far)")
        names = [f"a{i}.{named.zone}" for i in range(n)]
        unchanged = [timed(ensure, name, address(i)) for i, name in enumerate(names)]
        changed = [timed(ensure, name, address(i + 1)) for i, name in enumerate(names)]
    return {
        "benchmark": "network_dns", "server": "BIND 9 named (tests/support/bind9.py)", "n": n,
        "machine": f"{platform.machine()} {platform.python_version()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "direct_ms": {"median": ms(statistics.median(direct)), "mean": ms(statistics.mean(direct))},
        "armillary_ms": {"median": ms(statistics.median(armillary)), "mean": ms(statistics.mean(armillary))},
        "ratio_of_medians": round(statistics.median(armillary) / statistics.median(direct), 3),
        "ratio_of_means": round(sum(armillary) / sum(direct), 3),
        "ensure_unchanged_ms_median": ms(statistics.median(unchanged)),
        "ensure_changed_ms_median": ms(statistics.median(changed)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="registrations of each kind")
    parser.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = parser.parse_args()
    say = (lambda _: None) if args.json else print
    result = run(args.n, say)
    if args.json:
        print(json.dumps(result))
        return
    print(f"\n{result['n']} registrations of each kind, interleaved, against {result['server']} "
          f"(load average {result['load_average'][0]})")
    print(f"  direct dnspython update   median {result['direct_ms']['median']:6.2f} ms, "
          f"mean {result['direct_ms']['mean']:6.2f} ms")
    print(f"  Rfc2136Backend.ensure     median {result['armillary_ms']['median']:6.2f} ms, "
          f"mean {result['armillary_ms']['mean']:6.2f} ms")
    print(f"  ratio                     {result['ratio_of_medians']:.2f} of medians, "
          f"{result['ratio_of_means']:.2f} of means (target ≤ 1.20)")
    print(f"  ensure again, unchanged   median {result['ensure_unchanged_ms_median']:6.2f} ms (refused guess, 2 reads)")
    print(f"  ensure, address changed   median {result['ensure_changed_ms_median']:6.2f} ms "
          "(refused guess, 2 reads, update)")


if __name__ == "__main__":
    main()

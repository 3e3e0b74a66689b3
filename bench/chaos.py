"""The kill -9 campaign, all points (issue 23): SIGKILL a real ``armillary serve`` at each point, restart it,
let the reaper work, and check the invariants (``tests/support/chaos.py``); prints point → outcome, recovery.

    .venv/bin/python bench/chaos.py --points 20            # every point, simulated + docker, on PostgreSQL
    .venv/bin/python bench/chaos.py --only sim-ip-taken,docker-create-mid --sqlite

PostgreSQL: ``ARMILLARY_TEST_PG_URL`` (default postgres@127.0.0.1:5432); a fresh database is made and dropped.
The docker points need podman (started privately, as the test suite does; ``scripts/peers/docker.sh``).
Recovery is the time from starting the new server to every job ended and every lock and lease gone; it
includes the server's start, the lease (``--lease``, 2 s) and the steps' retry back-off.
Exit status 1 when any point broke an invariant or ended its job otherwise than users rely on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.chaos import NOT_YET, POINTS, Campaign, Outcome, table
from tests.support.databases import database


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=len(POINTS),
                        help=f"the first N points (20: those of issue 23; default all {len(POINTS)})")
    parser.add_argument("--only", default="", help="comma-separated point names")
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL (held-row points skipped)")
    parser.add_argument("--no-docker", action="store_true", help="skip the docker points")
    parser.add_argument("--lease", type=float, default=2.0, help="ARMILLARY_LEASE_SECONDS of the server")
    args = parser.parse_args()
    chosen = [p for p in POINTS if not args.only or p.name in args.only.split(",")][: args.points]
    if args.sqlite:
        chosen = [p for p in chosen if not p.needs_pg]
    if args.no_docker:
        chosen = [p for p in chosen if p.driver != "docker"]
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="armillary-chaos-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        podman = None
        if any(p.driver == "docker" for p in chosen):
            from tests.support.podman import missing_tools, start_podman

            reason = missing_tools()
            if reason:
                print(f"docker points skipped: {reason}")
                chosen = [p for p in chosen if p.driver != "docker"]
            else:
                (root / "podman").mkdir()
                podman = stack.enter_context(start_podman(root / "podman", registries=False))
        url = stack.enter_context(database("sqlite" if args.sqlite else "postgresql", root))
        campaign = Campaign(root / "data", url, podman, lease_s=args.lease)
        campaign.setup()
        started = time.monotonic()
        try:
            for point in chosen:
                try:
                    outcome = campaign.run(point)
                except Exception as exc:  # noqa: BLE001 - a point that cannot run is reported, the rest go on
                    outcome = Outcome(point.name, point.driver, "not reached", "?", 0.0, [], f"{type(exc).__name__}: {exc}")
                outcomes.append(outcome)
                print(f"  {point.name}: {'ok' if outcome.ok else 'FAILED'} ({outcome.moment}, job "
                      f"{outcome.job_status}, recovery {outcome.recovery_s:.1f}s)", flush=True)
            final = campaign.teardown_check()
        finally:
            campaign.stop()
    print()
    print(f"kill -9 campaign: {len(outcomes)} points, {'sqlite' if args.sqlite else 'postgresql'}, "
          f"lease {args.lease:g}s, {time.monotonic() - started:.0f}s in all")
    print(table(outcomes))
    print(f"final destroy of everything left: {'ok' if not final else '; '.join(final)}")
    print("not covered yet (not built): " + ", ".join(NOT_YET))
    recoveries = sorted(o.recovery_s for o in outcomes if o.ok)
    if recoveries:
        print(f"recovery: median {recoveries[len(recoveries) // 2]:.1f}s, max {recoveries[-1]:.1f}s")
    return 0 if all(o.ok for o in outcomes) and not final else 1


if __name__ == "__main__":
    sys.exit(main())

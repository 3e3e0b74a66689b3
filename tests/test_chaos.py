"""The kill -9 campaign (issue 23), a representative subset: a real ``armillary serve`` SIGKILLed at chosen
points, restarted, and held to the invariants of ``tests/support/chaos.py`` once the reaper has done its work.

One server (and one database) per backend serves all its points in turn, each on its own systems: every
point's kill and restart is real, and the invariants are checked over the whole database each time (what an
earlier point left behind would show too). The points are split between SQLite and PostgreSQL; the points that
hold the system's row to kill exactly between a driver call and the recording of its result need PostgreSQL.
The docker points run on podman's Docker API (``tests/support/podman.py``). ``bench/chaos.py --points 20``
runs every point, on PostgreSQL, and prints the table.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import podman as podman_support
from tests.support.chaos import BY_NAME, Campaign, check_invariants
from tests.support.databases import database

podman_peer = podman_support.podman_peer

SUBSET = {  # the others run in bench/chaos.py (destroy, reload, clone, stop/start, boot wait, queued...)
    "sqlite": ["sim-ip-taken", "sim-bulk-mid-batch", "docker-provision-mid", "docker-deploy-switch"],
    "postgresql": ["sim-create-unrecorded", "sim-destroy-unrecorded", "sim-create-twice", "docker-create-unrecorded"],
}
CASES = [(backend, name) for backend, names in SUBSET.items() for name in names]


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory) -> Iterator[dict]:
    """backend → a running Campaign, made on first use and stopped at the end of the module."""
    made: dict[str, Campaign] = {}
    stack = []

    def get(backend: str) -> Campaign:
        if backend not in made:
            root = tmp_path_factory.mktemp(f"chaos-{backend}")
            context = database(backend, root)
            url = context.__enter__()
            stack.append(context)
            made[backend] = Campaign(root / "data", url)
            made[backend].setup()
        return made[backend]

    yield {"get": get, "made": made}
    for campaign in made.values():
        campaign.stop()
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.mark.parametrize(("backend", "point"), CASES, ids=[f"{b}-{p}" for b, p in CASES])
def test_kill_at_point_then_restart_keeps_every_invariant(backend: str, point: str, campaigns, request) -> None:
    spec = BY_NAME[point]
    campaign: Campaign = campaigns["get"](backend)
    if spec.driver == "docker":
        campaign.use_podman(request.getfixturevalue("podman_peer"))
    outcome = campaign.run(spec)
    assert outcome.violations == [], outcome
    assert outcome.error is None, outcome
    if spec.adopts:  # killed between the driver's create and its record: the retry kept that very machine
        assert outcome.moment.startswith("held") and len(campaign.state["made"]) == 1, outcome


@pytest.mark.parametrize("backend", list(SUBSET))
def test_after_the_campaign_everything_can_be_destroyed(backend: str, campaigns) -> None:
    """No system is wedged (its lock free, its machine where it says): one bulk destroy takes everything away."""
    assert backend in campaigns["made"], f"no point ran on {backend}: select its points too (they make what this destroys)"
    assert campaigns["made"][backend].teardown_check() == []


def test_the_checker_sees_what_it_must(campaigns) -> None:
    """The invariants are not vacuous: a machine without a system, a held lock, a running job, an address
    given twice and a quota drift put in by hand are each reported."""
    campaign: Campaign = campaigns["get"]("sqlite")
    url = campaign.db_url
    assert check_invariants(url) == []
    from sqlalchemy import text

    from tests.support.chaos import engine

    with engine(url).begin() as conn:
        hv = conn.execute(text("SELECT id FROM hypervisors WHERE driver = 'simulated' LIMIT 1")).scalar_one()
        env = conn.execute(text("SELECT id FROM environments WHERE name = 'dev'")).scalar_one()
        conn.execute(text("INSERT INTO simulated_machines (hypervisor_id, system_id, hostname, state, address, spec, "
                          "created_at) VALUES (:h, 999999, 'ghost', 'running', '198.18.9.9', '{}', CURRENT_TIMESTAMP)"),
                     {"h": hv})
        job = conn.execute(text("INSERT INTO jobs (action, workflow, status, holds_lock, params, context, "
                                "cancel_requested, created_at) VALUES ('create', 'create', 'running', true, '{}', "
                                "'{}', false, CURRENT_TIMESTAMP) RETURNING id")).scalar_one()
        conn.execute(text("INSERT INTO locks (resource, job_id, acquired_at, expires_at) VALUES "
                          "('system:999999', :j, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"j": job})
        pool = conn.execute(text("SELECT id FROM ip_pools LIMIT 1")).scalar_one()
        for ordinal in (500, 501):
            conn.execute(text("INSERT INTO ip_addresses (pool_id, ordinal, address, kind, note, created_at) VALUES "
                              "(:p, :o, '10.77.9.9', 'reserved', '', CURRENT_TIMESTAMP)"), {"p": pool, "o": ordinal})
        conn.execute(text("UPDATE role_grants SET used_systems = used_systems + 1 WHERE environment_id = :e"),
                     {"e": env})
    try:
        found = "\n".join(check_invariants(url))
        for words in ("machine sim-", "has no system", f"job {job} (create) is still running",
                      "lock system:999999 still held", "address 10.77.9.9 recorded 2 times", "usage ("):
            assert words in found, found
    finally:
        with engine(url).begin() as conn:
            conn.execute(text("DELETE FROM simulated_machines WHERE system_id = 999999"))
            conn.execute(text("DELETE FROM locks WHERE job_id = :j"), {"j": job})
            conn.execute(text("DELETE FROM jobs WHERE id = :j"), {"j": job})
            conn.execute(text("DELETE FROM ip_addresses WHERE address = '10.77.9.9'"))
            conn.execute(text("UPDATE role_grants SET used_systems = used_systems - 1 WHERE environment_id = :e"),
                         {"e": env})
    assert check_invariants(url) == []

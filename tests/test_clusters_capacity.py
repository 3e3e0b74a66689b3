"""The capacity maths, one row per case (``armillary.clusters.capacity``: the rule is in its docstring)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from armillary.clusters.capacity import Bounds, CapacityError, new_size, percent_change
from armillary.clusters.models import ClusterMember
from armillary.clusters.policies import Candidate, placement, victims
from armillary.clusters.schemas import DeletionSpec, PlacementSpec

# (current, type, number, min_step, min, max, strict) → new size, or the bound named in the 422
CASES = [
    # percentages: magnitude < 1 rounds away from zero, otherwise truncates toward zero
    (5, "percent", 30, 0, 0, None, True, 6),  # 1.5 → 1: Senlin's docs say +2, its code +1; we pin +1
    (5, "percent", -30, 0, 0, None, True, 4),  # -1.5 → -1
    (5, "percent", 10, 0, 0, None, True, 6),  # 0.5 → 1 (away from zero)
    (5, "percent", -10, 0, 0, None, True, 4),  # -0.5 → -1
    (10, "percent", 25, 0, 0, None, True, 12),  # 2.5 → 2
    (10, "percent", 50, 0, 0, None, True, 15),
    (10, "percent", -99, 0, 0, None, True, 1),  # -9.9 → -9
    (0, "percent", 50, 0, 0, None, True, 0),  # nothing to take a percentage of
    (10, "percent", 10, 3, 0, None, True, 13),  # min_step raises 1 to 3
    (10, "percent", -10, 3, 0, None, True, 7),
    (10, "percent", 50, 3, 0, None, True, 15),  # min_step below the change: no effect
    # exact and change
    (5, "exact", 8, 0, 0, None, True, 8),
    (5, "change", 3, 0, 0, None, True, 8),
    (5, "change", -5, 0, 0, None, True, 0),
    # bounds: strict names the bound, non-strict clamps
    (5, "change", 10, 0, 0, 10, True, "max"),
    (5, "change", 10, 0, 0, 10, False, 10),
    (5, "change", -4, 0, 2, None, True, "min"),
    (5, "change", -4, 0, 2, None, False, 2),
    (5, "exact", 20000, 0, 0, None, True, "max"),  # the hard cap of 10,000 holds without a max
    (5, "exact", 20000, 0, 0, None, False, 10000),
    (5, "exact", 3, 0, 4, 2, True, "max"),  # max below min is itself refused
    (5, "exact", 2.5, 0, 0, None, True, "number"),
]


@pytest.mark.parametrize("current, kind, number, min_step, lo, hi, strict, expected", CASES)
def test_new_size(current, kind, number, min_step, lo, hi, strict, expected) -> None:
    bounds = Bounds(lo, hi)
    if isinstance(expected, str):
        with pytest.raises(CapacityError) as caught:
            new_size(current, kind, number, min_step=min_step, bounds=bounds, strict=strict)
        assert caught.value.field == expected
    else:
        assert new_size(current, kind, number, min_step=min_step, bounds=bounds, strict=strict) == expected


def test_senlins_case_is_pinned() -> None:
    """30 % of 5 is 1.5: truncated toward zero, a change of 1 (Senlin's documentation said 2)."""
    assert percent_change(5, 30) == 1 and percent_change(5, -30) == -1


def _member(index: int, joined_minutes: int, revision: int = 1) -> ClusterMember:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return ClusterMember(system_id=index, cluster_id=1, member_index=index, profile_revision=revision,
                         joined_at=base + timedelta(minutes=joined_minutes))


def test_deletion_takes_failed_members_first_then_by_criteria() -> None:
    members = [Candidate(_member(1, 0, 2), "ready"), Candidate(_member(2, 1, 1), "ready"),
               Candidate(_member(3, 2, 2), "error"), Candidate(_member(4, 3, 2), "creating"),
               Candidate(_member(5, 4, 1), "ready")]
    pick = lambda criteria, n: [m.member_index for m in victims(members, n, DeletionSpec(criteria=criteria),
                                                                random.Random(1))]
    assert pick("oldest_first", 3) == [3, 4, 1]
    assert pick("youngest_first", 3) == [3, 4, 5]
    assert pick("oldest_profile_first", 4) == [3, 4, 2, 5]
    assert set(pick("random", 2)) == {3, 4} and len(pick("random", 5)) == 5


def test_placement_spreads_by_weight() -> None:
    spec = PlacementSpec.model_validate({"hypervisors": [{"hypervisor": "a", "weight": 1},
                                                         {"hypervisor": "b", "weight": 3}]})
    chosen = placement(spec, [10, 20], [], 8)
    assert chosen.count(10) == 2 and chosen.count(20) == 6
    assert placement(spec, [10, 20], [20, 20, 20], 1) == [10]  # existing members count
    assert placement(None, [], [], 2) == [None, None]


def test_probes_against_real_local_sockets() -> None:
    """The health probes against a listening socket and an HTTP server on loopback (the HTTP/TCP code
    the health policy runs; tests/test_clusters_docker.py runs it against containers)."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from armillary.clusters.probes import failure
    from armillary.clusters.schemas import HealthProbe

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()[1]
    try:
        assert failure(HealthProbe(kind="tcp", port=port), "127.0.0.1") is None
        assert "port" in failure(HealthProbe(kind="tcp", port=dead, timeout=1), "127.0.0.1")
        assert failure(HealthProbe(kind="http", port=port, path="/ok"), "127.0.0.1") is None
        assert failure(HealthProbe(kind="http", port=port, path="/sick"), "127.0.0.1").endswith("HTTP 503")
        assert "ConnectError" in failure(HealthProbe(kind="http", port=dead, timeout=1), "127.0.0.1")
    finally:
        server.shutdown()
        server.server_close()

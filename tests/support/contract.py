"""The world the contract tests (tests/test_contract.py) fuzz against, and their budget.

A small real inventory (two environments, a simulated hypervisor, a type, systems) so that generated
requests meet existing rows as well as missing ones, and the two callers the contract is checked for:
an admin, and a viewer of one environment.
"""

from __future__ import annotations

import os

import httpx

from armillary.domain.db import Database
from tests.support.accounts import ADMIN, bearer, ensure_user, grant, token_for

VIEWER = "contract-viewer"
# Examples per operation and generation mode. The suite's budget keeps test_contract.py within 180 s on
# this 2-core machine; a nightly-style run raises it (README: ARMILLARY_CONTRACT_EXAMPLES=200).
EXAMPLES = int(os.environ.get("ARMILLARY_CONTRACT_EXAMPLES", "2"))
# Scenarios of the stateful test (sequences of linked calls, up to 6 steps each).
STATEFUL_SCENARIOS = int(os.environ.get("ARMILLARY_CONTRACT_SCENARIOS", str(max(3, EXAMPLES))))
# The suite fuzzes (schema examples, then generated cases); the larger run adds the coverage phase
# (every boundary and every kind of wrong value of every parameter: thousands of requests).
PHASES = ["examples", "fuzzing", "stateful", *(["coverage"] if EXAMPLES > 2 else [])]
SEED = int(os.environ.get("ARMILLARY_CONTRACT_SEED", "23"))


def seed_inventory(base_url: str, admin_token: str) -> None:
    """What the fuzzer finds in place, made through the API as an operator would."""
    with httpx.Client(base_url=base_url + "/api/v1", headers=bearer(admin_token), timeout=30) as api:
        for env in ("dev", "prod"):
            _ok(api.post("/environments", json={"name": env, "description": f"{env} (contract tests)"}))
        _ok(api.post("/hypervisors", json={"name": "sim1", "environment": "dev", "driver": "simulated",
                                          "config": {"latency_ms": 0}}))
        _ok(api.post("/types", json={"name": "web", "provisioner": {
            "kind": "script", "spec": {"scripts": [{"name": "hello", "inline": "echo hello"}]}}}))
        for name in ("web1", "web2"):
            _ok(api.post("/systems", json={"hostname": name, "environment": "dev", "hypervisor": "sim1",
                                          "type": "web", "labels": {"tier": "frontend"}}))


def viewer_token(db: Database) -> str:
    """A token of a viewer of ``dev`` (and of nothing else)."""
    ensure_user(db, VIEWER)
    grant(db, VIEWER, "dev", "viewer")
    return token_for(db, VIEWER)


class Tokens:
    """The token a role's requests carry; a new one after each operation that may have revoked it."""

    # Logging out, deleting a token (ours has a small id the fuzzer finds) or changing the password.
    REVOKING = frozenset({"POST /api/v1/auth/logout", "DELETE /api/v1/auth/tokens/{token_id}",
                          "POST /api/v1/auth/password"})

    def __init__(self, db: Database, role: str) -> None:
        self.db = db
        self.user = ADMIN if role == "admin" else VIEWER
        self.token = token_for(db, self.user)

    def current(self) -> str:
        return self.token

    def after(self, operation: str) -> None:
        if operation in self.REVOKING:
            self.token = token_for(self.db, self.user)


def _ok(response: httpx.Response) -> None:
    """Made, or there already (a second module of the session seeds the same server)."""
    assert response.status_code < 300 or response.status_code == 409, response.text

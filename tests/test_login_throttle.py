"""Login throttling per account name and per client address (429 + Retry-After, audited, admins lift
it, LDAP logins too), and the tokens a password change, a reset or a deactivation must end (issue 22)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import delete, select

from armillary.auth import throttle
from armillary.domain.accounts import LoginThrottle
from armillary.domain.models import utcnow
from tests.support.accounts import ADMIN, ADMIN_PASSWORD, TEST_PASSWORDS, bearer, ensure_user, token_for
from tests.support.cli import Cli
from tests.support.databases import database
from tests.support.server import running_app

USER_PASSWORD, OTHER_PASSWORD = TEST_PASSWORDS[2], TEST_PASSWORDS[3]
# Small limits and a first lockout long enough that no test races its end.
LIMITS = dict(login_max_failures=3, login_max_failures_per_address=8, login_lockout_s=60.0,
              login_max_lockout_s=600.0, login_failure_window_s=900.0)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory) -> Iterator[tuple[str, object]]:
    data_dir = tmp_path_factory.mktemp(f"throttle-{request.param}")
    with database(request.param, data_dir) as url, running_app(url, data_dir, engine="off", **LIMITS) as (base, db):
        ensure_user(db, ADMIN, admin=True)
        yield base + "/api/v1", db


@pytest.fixture
def world(server) -> Iterator[dict]:
    """The server with no failed logins counted, uma and vic (local users), and an admin client."""
    base, db = server
    with db.engine.begin() as conn:
        conn.execute(delete(LoginThrottle.__table__))
    ensure_user(db, "uma", password=USER_PASSWORD)
    ensure_user(db, "vic", password=OTHER_PASSWORD)
    with httpx.Client(base_url=base, headers=bearer(token_for(db, ADMIN)), timeout=30) as admin:
        for name, password in (("uma", USER_PASSWORD), ("vic", OTHER_PASSWORD)):  # as ensure_user made them
            admin.patch(f"/users/{name}", json={"password": password, "active": True})
        yield {"url": base, "db": db, "admin": admin}


def login(url: str, username: str, password: str, path: str = "/auth/login") -> httpx.Response:
    return httpx.post(f"{url}{path}", json={"username": username, "password": password}, timeout=30)


def assert_throttled(response: httpx.Response, longest: int = 60) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:armillary:problem:too-many-attempts"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= longest and body["retry_after"] == retry_after
    return retry_after


# ---------------------------------------------------------------- per account


def test_failed_logins_lock_the_account_out_even_for_the_right_password(world) -> None:
    url = world["url"]
    answers = [login(url, "uma", f"wrong-guess-{i}").status_code for i in range(3)]
    assert answers == [401, 401, 401]  # the limit-th failure still says only "invalid"
    assert_throttled(login(url, "uma", "wrong-guess-4"))
    assert_throttled(login(url, "uma", USER_PASSWORD))  # the right password is not even looked at
    assert_throttled(login(url, "uma", USER_PASSWORD, "/auth/session"))  # browser sessions alike
    assert login(url, "vic", OTHER_PASSWORD).status_code == 200  # others are not affected


def test_unknown_names_are_throttled_alike(world) -> None:
    url = world["url"]
    for name in ("uma", "nobody-here"):
        assert [login(url, name, "wrong-guess").status_code for _ in range(3)] == [401] * 3
    known, unknown = login(url, "uma", "wrong-guess"), login(url, "nobody-here", "wrong-guess")
    assert_throttled(known)
    assert_throttled(unknown)
    assert known.json()["detail"].rsplit(" ", 2)[0] == unknown.json()["detail"].rsplit(" ", 2)[0]


def test_a_success_forgets_the_accounts_failures(world) -> None:
    url = world["url"]
    for _ in range(2):
        assert login(url, "uma", "wrong-guess").status_code == 401
        assert login(url, "uma", USER_PASSWORD).status_code == 200
    # Never three failures in a row: never locked.
    assert login(url, "uma", "wrong-guess").status_code == 401
    assert login(url, "uma", "wrong-guess").status_code == 401
    assert login(url, "uma", USER_PASSWORD).status_code == 200


def test_parallel_guesses_cannot_slip_past_the_limit(world) -> None:
    url, results = world["url"], []
    barrier = threading.Barrier(12)

    def guess(i: int) -> None:
        barrier.wait()
        results.append(login(url, "uma", f"parallel-guess-{i}").status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [401] * 3 + [429] * 9


def test_the_throttled_attempt_is_audited(world) -> None:
    url, admin = world["url"], world["admin"]
    for _ in range(3):
        login(url, "uma", "wrong-guess")
    retry_after = assert_throttled(login(url, "uma", "wrong-guess"))
    rows = admin.get("/audit", params={"outcome": "refused", "resource_type": "auth", "limit": 5}).json()["items"]
    latest = rows[0]
    assert (latest["path"], latest["status"], latest["username"]) == ("/api/v1/auth/login", 429, "uma")
    assert latest["detail"]["throttled"] == "user" and latest["detail"]["retry_after"] == retry_after
    assert latest["source_address"] == "127.0.0.1"
    failed = rows[1]  # the failure that reached the limit says so
    assert failed["status"] == 401 and failed["detail"]["failed_logins"]["user"] == 3
    assert failed["detail"]["lockout_s"]["user"] == 60


# ---------------------------------------------------------------- per client address


def test_spraying_many_names_from_one_address_locks_the_address(world) -> None:
    url = world["url"]
    for name in ("a1", "a2", "a3", "a4"):  # 2 failures each: no name reaches its limit of 3
        assert [login(url, name, "sprayed-guess").status_code for _ in range(2)] == [401, 401]
    assert_throttled(login(url, "a5", "sprayed-guess"))
    assert_throttled(login(url, "vic", OTHER_PASSWORD))  # everyone from this address, for now
    locks = {(t["scope"], t["key"]): t for t in world["admin"].get("/auth/throttles").json()}
    assert locks[("address", "127.0.0.1")]["failures"] == 8 and locks[("address", "127.0.0.1")]["locked_until"]
    assert world["admin"].delete("/auth/throttles/address/127.0.0.1").status_code == 204
    assert login(url, "vic", OTHER_PASSWORD).status_code == 200
    assert world["admin"].delete("/auth/throttles/address/127.0.0.1").status_code == 204  # twice is fine


def test_successful_logins_do_not_count_against_the_address(world) -> None:
    url = world["url"]
    for _ in range(9):
        assert login(url, "vic", OTHER_PASSWORD).status_code == 200
    for name in ("b1", "b2", "b3", "b4", "b5", "b6", "b7"):  # 9 + 7 attempts; 7 failures, under 8
        assert login(url, name, "sprayed-guess").status_code == 401
    assert login(url, "vic", OTHER_PASSWORD).status_code == 200


# ---------------------------------------------------------------- admins lift it


def test_admin_unlocks_a_user_over_the_api_and_the_cli(world, tmp_path: Path) -> None:
    url, admin = world["url"], world["admin"]
    for _ in range(4):
        login(url, "uma", "wrong-guess")
    assert_throttled(login(url, "uma", USER_PASSWORD))
    assert admin.post("/users/uma/unlock").status_code == 204
    assert login(url, "uma", USER_PASSWORD).status_code == 200
    assert admin.post("/users/nobody-here/unlock").status_code == 404

    for _ in range(4):
        login(url, "uma", "wrong-guess")
    cli = Cli(url.removesuffix("/api/v1"), tmp_path)
    env = {"ARMILLARY_TOKEN": token_for(world["db"], ADMIN)}
    listed = cli("user", "lockouts", "-o", "json", env=env).json()
    assert [(t["scope"], t["key"], bool(t["locked_until"])) for t in listed][0] == ("user", "uma", True)
    done = cli("user", "unlock", "uma", env=env)
    assert done.code == 0 and "Unlocked the logins of uma" in done.out, done
    assert login(url, "uma", USER_PASSWORD).status_code == 200
    assert cli("user", "unlock", "--address", "127.0.0.1", env=env).code == 0
    assert cli("user", "unlock", env=env).code == 2  # a name or an address


def test_an_admin_password_reset_lifts_the_lockout(world) -> None:
    url, admin = world["url"], world["admin"]
    for _ in range(4):
        login(url, "uma", "wrong-guess")
    assert admin.patch("/users/uma", json={"password": "a-fresh-pass-8"}).status_code == 200
    assert login(url, "uma", "a-fresh-pass-8").status_code == 200


# ---------------------------------------------------------------- the lockout's growth, on the database


def test_lockouts_double_up_to_the_longest_and_are_forgotten_after_the_window(server) -> None:
    _, db = server
    with db.engine.begin() as conn:
        conn.execute(delete(LoginThrottle.__table__))
    limits = throttle.Limits(max_failures=3, max_failures_per_address=0, lockout_s=1, max_lockout_s=5, window_s=100)
    now = utcnow()
    attempts = []
    for expected_lockout in (None, None, 1, 2, 4, 5, 5):
        attempt = throttle.begin(db.engine, limits, "zed", "192.0.2.7", now)
        attempts.append(attempt)
        assert attempt.lockouts.get("user") == expected_lockout
        if expected_lockout:
            with pytest.raises(throttle.Throttled) as refused:  # while it holds
                throttle.begin(db.engine, limits, "zed", "192.0.2.7", now + timedelta(seconds=expected_lockout - 0.5))
            assert refused.value.retry_after == 1 and refused.value.scope == "user"
            now += timedelta(seconds=expected_lockout)
    assert [a.failures["user"] for a in attempts] == [1, 2, 3, 4, 5, 6, 7]
    assert "address" not in attempts[0].failures  # 0: no limit per address
    # The window counts from the end of the last lockout.
    assert throttle.begin(db.engine, limits, "zed", None, now + timedelta(seconds=99)).failures["user"] == 8
    fresh = throttle.begin(db.engine, limits, "zed", None, now + timedelta(seconds=99 + 5 + 100))
    assert fresh.failures["user"] == 1 and not fresh.lockouts
    with db.session() as session:
        assert session.scalar(select(LoginThrottle.failures).where(LoginThrottle.key == "zed")) == 1


def test_the_default_limits() -> None:
    limits = throttle.Limits()
    assert (limits.max_failures, limits.max_failures_per_address) == (5, 20)
    assert [limits.lockout(n, 5) for n in (5, 6, 7, 14, 15, 100)] == [1, 2, 4, 512, 900, 900]


# ---------------------------------------------------------------- tokens that must end (#9)


def test_changing_your_password_ends_your_other_tokens_and_sessions(world) -> None:
    url = world["url"]
    first, second = (login(url, "uma", USER_PASSWORD).json()["token"] for _ in range(2))
    with httpx.Client(base_url=url, headers=bearer(first), timeout=30) as uma:
        named = uma.post("/auth/tokens", json={"name": "ci"}).json()["token"]
        with httpx.Client(base_url=url, timeout=30) as browser:
            assert browser.post("/auth/session", json={"username": "uma", "password": USER_PASSWORD}).status_code == 200
            assert browser.get("/auth/me").status_code == 200
            changed = uma.post("/auth/password", json={"current_password": USER_PASSWORD, "password": "uma-new-pass-1"})
            assert changed.status_code == 204
            assert browser.get("/auth/me").status_code == 401
        for other in (second, named):
            assert httpx.get(f"{url}/auth/me", headers=bearer(other)).status_code == 401
        assert uma.get("/auth/me").status_code == 200  # the token that changed it stays
    assert login(url, "uma", USER_PASSWORD).status_code == 401
    assert login(url, "uma", "uma-new-pass-1").status_code == 200


def test_an_admin_password_reset_ends_all_the_users_tokens(world) -> None:
    url, admin = world["url"], world["admin"]
    before = [login(url, "uma", USER_PASSWORD).json()["token"], token_for(world["db"], "uma")]
    assert admin.patch("/users/uma", json={"password": "reset-by-admin-1"}).status_code == 200
    for token in before:
        assert httpx.get(f"{url}/auth/me", headers=bearer(token)).status_code == 401
    assert admin.get("/auth/me").status_code == 200
    after = login(url, "uma", "reset-by-admin-1").json()["token"]
    assert httpx.get(f"{url}/auth/me", headers=bearer(after)).status_code == 200


def test_reactivating_a_user_revives_none_of_their_old_tokens(world) -> None:
    url, admin = world["url"], world["admin"]
    old = login(url, "uma", USER_PASSWORD).json()["token"]
    assert admin.patch("/users/uma", json={"active": False}).status_code == 200
    assert httpx.get(f"{url}/auth/me", headers=bearer(old)).status_code == 401
    assert admin.patch("/users/uma", json={"active": True}).status_code == 200
    assert httpx.get(f"{url}/auth/me", headers=bearer(old)).status_code == 401
    new = login(url, "uma", USER_PASSWORD).json()["token"]
    assert httpx.get(f"{url}/auth/me", headers=bearer(new)).status_code == 200


def test_the_admin_cli_password_reset_ends_the_users_tokens_and_lockout(world, tmp_path: Path) -> None:
    url, db = world["url"], world["db"]
    old = token_for(db, "uma")
    for _ in range(4):
        login(url, "uma", "wrong-guess")
    reset = Cli(url.removesuffix("/api/v1"), tmp_path)(
        "admin", "create-user", "uma", "--update-password",
        env={"ARMILLARY_DATABASE_URL": db.url, "ARMILLARY_DATA_DIR": str(tmp_path), "ARMILLARY_PASSWORD": ADMIN_PASSWORD},
    )
    assert reset.code == 0 and "token" in reset.out and "revoked" in reset.out, reset
    assert httpx.get(f"{url}/auth/me", headers=bearer(old)).status_code == 401
    assert login(url, "uma", ADMIN_PASSWORD).status_code == 200


# ---------------------------------------------------------------- LDAP logins


@pytest.fixture(scope="module")
def ldap_server(tmp_path_factory) -> Iterator[tuple[str, object]]:
    from armillary.auth.ldap import LdapSettings
    from tests.support.slapd import running_slapd

    with running_slapd(tmp_path_factory.mktemp("throttle-ldap")) as slapd:
        ldap = LdapSettings(url=slapd.url, user_dn_template=slapd.user_dn_template)
        data_dir = tmp_path_factory.mktemp("throttle-ldap-server")
        with database("sqlite", data_dir) as url, running_app(url, data_dir, ldap=ldap, engine="off",
                                                             **LIMITS) as (base, db):
            ensure_user(db, ADMIN, admin=True)
            yield base + "/api/v1", db, slapd


def test_directory_logins_are_throttled_too(ldap_server) -> None:
    url, db, slapd = ldap_server
    assert [login(url, "bob", "not-bobs-password").status_code for _ in range(3)] == [401] * 3
    assert_throttled(login(url, "bob", slapd.users["bob"]))
    with httpx.Client(base_url=url, headers=bearer(token_for(db, ADMIN)), timeout=30) as admin:
        # bob never logged in, so he has no account yet: his name is unlocked as a name.
        assert admin.delete("/auth/throttles/user/BOB").status_code == 204
    assert login(url, "bob", slapd.users["bob"]).status_code == 200


def test_an_unreachable_directory_counts_no_failures(tmp_path) -> None:
    from armillary.auth.ldap import LdapSettings

    ldap = LdapSettings(url="ldap://127.0.0.1:9", user_dn_template="uid={username},ou=people,dc=example,dc=org",
                        timeout_s=1)
    with database("sqlite", tmp_path) as url, running_app(url, tmp_path, ldap=ldap, engine="off",
                                                          **LIMITS) as (base, db):
        answers = [login(base + "/api/v1", "bob", "whatever-pass").status_code for _ in range(5)]
        with db.session() as session:
            counted = session.scalars(select(LoginThrottle)).all()
    assert answers == [503] * 5
    assert all(row.failures == 0 for row in counted)

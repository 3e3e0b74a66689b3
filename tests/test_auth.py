"""Logins, tokens, browser sessions, roles in environments, quotas and environment locks, over HTTP."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from armillary import redaction
from armillary.auth import tokens
from armillary.domain.accounts import ApiToken
from armillary.domain.models import Environment, utcnow
from armillary.redaction import MASK, SecretRegistry
from tests.support.accounts import TEST_PASSWORDS, bearer, ensure_user, grant, token_for
from tests.support.jobs import act, act_and_wait, sim_setup, wait_job

OPERATOR_PASSWORD, USER_PASSWORD = TEST_PASSWORDS[1], TEST_PASSWORDS[2]


@pytest.fixture
def world(api: httpx.Client, live_server) -> dict:
    """dev (simulated hypervisor, systems s1 and s2) and prod; olga operates dev, uma uses it, vic views it."""
    sim_setup(api, systems=("s1", "s2"))
    assert api.post("/environments", json={"name": "prod"}).status_code == 201
    assert api.post("/hypervisors", json={"name": "psim", "environment": "prod", "driver": "simulated"}).status_code == 201
    assert api.post("/systems", json={"hostname": "p1", "environment": "prod", "hypervisor": "psim"}).status_code == 201
    db = live_server[1]
    ensure_user(db, "olga", password=OPERATOR_PASSWORD)
    ensure_user(db, "uma", password=USER_PASSWORD)
    ensure_user(db, "vic")
    grant(db, "olga", "dev", "operator")
    grant(db, "uma", "dev", "user")
    grant(db, "vic", "dev", "viewer")
    return {"db": db, "url": str(api.base_url).rstrip("/")}


@pytest.fixture
def as_user(world) -> Iterator:
    """``as_user("uma")``: an API client with a fresh token of that user."""
    clients: list[httpx.Client] = []

    def make(name: str) -> httpx.Client:
        client = httpx.Client(base_url=world["url"], headers=bearer(token_for(world["db"], name)), timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# ---------------------------------------------------------------- logging in


def test_login_returns_a_short_lived_token_that_works(world) -> None:
    response = httpx.post(world["url"] + "/auth/login", json={"username": "olga", "password": OPERATOR_PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token"].startswith("arm_") and body["user"] == "olga" and body["expires_at"]
    me = httpx.get(world["url"] + "/auth/me", headers=bearer(body["token"])).json()
    assert me["name"] == "olga" and me["admin"] is False
    assert [(r["environment"], r["role"]) for r in me["roles"]] == [("dev", "operator")]


def test_wrong_password_and_unknown_user_get_the_same_answer(world) -> None:
    wrong = httpx.post(world["url"] + "/auth/login", json={"username": "olga", "password": "not-her-password"})
    unknown = httpx.post(world["url"] + "/auth/login", json={"username": "nobody", "password": "whatever-pass"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["detail"] == unknown.json()["detail"] == "invalid username or password"
    assert wrong.headers["www-authenticate"].startswith("Bearer")


def test_requests_without_or_with_a_bad_token_are_401(world) -> None:
    for headers in ({}, bearer("arm_not-a-real-token"), {"Authorization": "Basic b2xnYTpwdw=="}):
        response = httpx.get(world["url"] + "/systems", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"


def test_token_revocation_takes_effect_on_the_next_request(world, as_user) -> None:
    olga = as_user("olga")
    created = olga.post("/auth/tokens", json={"name": "ci", "expires_in_days": 7})
    assert created.status_code == 201
    secret, token_id = created.json()["token"], created.json()["id"]
    with httpx.Client(base_url=world["url"], headers=bearer(secret)) as ci:
        assert ci.get("/systems").status_code == 200
        listed = olga.get("/auth/tokens").json()
        assert token_id in [t["id"] for t in listed] and all("token" not in t for t in listed)
        assert olga.delete(f"/auth/tokens/{token_id}").status_code == 204
        assert ci.get("/systems").status_code == 401


def test_expired_token_is_refused(world) -> None:
    token = token_for(world["db"], "olga", ttl=timedelta(seconds=1))
    with httpx.Client(base_url=world["url"], headers=bearer(token)) as client:
        assert client.get("/auth/me").status_code == 200
        time.sleep(1.2)
        assert client.get("/auth/me").status_code == 401


def test_token_lookup_gives_typed_values_and_every_role(db) -> None:
    """The lookup every request makes (a prepared statement on SQLite, SQLAlchemy's execution elsewhere)
    answers the same on both: a real bool, an aware datetime, one role per environment; None for a
    token that is not live."""
    with db.session() as session:
        session.add_all([Environment(name="lookup-a"), Environment(name="lookup-b")])
    ensure_user(db, "lena")
    grant(db, "lena", "lookup-a", "operator")
    grant(db, "lena", "lookup-b", "viewer")
    plaintext = token_for(db, "lena")
    used = utcnow() - timedelta(minutes=5)
    with db.engine.begin() as conn:
        conn.execute(update(ApiToken).where(ApiToken.token_hash == tokens.digest(plaintext)).values(last_used_at=used))
    with db.engine.connect() as conn:
        row, roles = tokens.find_valid_with_roles(conn, plaintext)
        assert row is not None and row.name == "lena" and row.is_admin is False
        assert isinstance(row.last_used_at, datetime) and row.last_used_at == used
        env_ids = dict(conn.execute(Environment.__table__.select().with_only_columns(
            Environment.name, Environment.id).where(Environment.name.like("lookup-%"))).all())
        assert roles == {env_ids["lookup-a"]: "operator", env_ids["lookup-b"]: "viewer"}
        assert tokens.find_valid_with_roles(conn, plaintext, utcnow()) == (row, roles)
        assert tokens.find_valid_with_roles(conn, plaintext + "x") == (None, {})


def test_an_issued_token_is_masked_by_its_shape_in_every_process(db) -> None:
    """Tokens are masked by their shape, not registered one by one: registering each rebuilt the registry's
    pattern after every login (~1 s of the GIL at 10,000 values), and a token logged by a process that did
    not issue it (a worker, another API process; here a fresh registry) was shown."""
    ensure_user(db, "tomas")
    plaintext = token_for(db, "tomas")
    assert plaintext not in redaction._registry
    assert SecretRegistry().redact_text(f"Authorization: Bearer {plaintext}, again {plaintext}.") == (
        f"Authorization: Bearer {MASK}, again {MASK}.")
    assert SecretRegistry().redact_text("prefix arm_0123456789 shown in the token list") == (
        "prefix arm_0123456789 shown in the token list")


def test_deactivating_a_user_stops_their_tokens_at_once(api, world, as_user) -> None:
    uma = as_user("uma")
    assert uma.get("/auth/me").status_code == 200
    assert api.patch("/users/uma", json={"active": False}).status_code == 200
    assert uma.get("/auth/me").status_code == 401
    login = httpx.post(world["url"] + "/auth/login", json={"username": "uma", "password": USER_PASSWORD})
    assert login.status_code == 401


def test_logout_revokes_the_token_used(world) -> None:
    token = httpx.post(world["url"] + "/auth/login", json={"username": "olga", "password": OPERATOR_PASSWORD}).json()
    with httpx.Client(base_url=world["url"], headers=bearer(token["token"])) as client:
        assert client.post("/auth/logout").status_code == 204
        assert client.get("/auth/me").status_code == 401


def test_browser_session_cookie_needs_the_csrf_token_for_writes(world) -> None:
    with httpx.Client(base_url=world["url"]) as browser:
        opened = browser.post("/auth/session", json={"username": "olga", "password": OPERATOR_PASSWORD})
        assert opened.status_code == 200
        cookie = opened.headers["set-cookie"]
        assert "armillary_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        csrf = opened.json()["csrf_token"]
        assert browser.get("/systems").status_code == 200  # reads need only the cookie
        forged = browser.post("/systems/s1/actions", json={"action": "create"})
        assert forged.status_code == 403 and "X-CSRF-Token" in forged.json()["detail"]
        allowed = browser.post("/systems/s1/actions", json={"action": "create"}, headers={"X-CSRF-Token": csrf})
        assert allowed.status_code == 202
        assert wait_job(browser, allowed.json()["id"])["status"] == "succeeded"
        assert browser.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
        assert browser.get("/systems", cookies={"armillary_session": opened.cookies["armillary_session"]}).status_code == 401


def test_password_change_and_user_admin(api, world, as_user) -> None:
    made = api.post("/users", json={"name": "Newbie", "password": "short"})
    assert made.status_code == 422 and made.json()["errors"][0]["field"] == "password"
    made = api.post("/users", json={"name": "Newbie", "password": "long-enough-1"})
    assert made.status_code == 201 and made.json()["name"] == "newbie" and "password" not in made.text
    assert api.post("/users", json={"name": "newbie", "password": "long-enough-1"}).status_code == 409
    token = httpx.post(world["url"] + "/auth/login", json={"username": "NEWBIE", "password": "long-enough-1"})
    assert token.status_code == 200
    with httpx.Client(base_url=world["url"], headers=bearer(token.json()["token"])) as newbie:
        bad = newbie.post("/auth/password", json={"current_password": "wrong-one-2", "password": "another-pass-3"})
        assert bad.status_code == 422
        assert newbie.post("/auth/password", json={"current_password": "long-enough-1",
                                                   "password": "another-pass-3"}).status_code == 204
        # With no role anywhere they see no environment at all.
        assert newbie.get("/environments").json()["items"] == []
    again = httpx.post(world["url"] + "/auth/login", json={"username": "newbie", "password": "another-pass-3"})
    assert again.status_code == 200
    assert api.patch("/users/admin", json={"admin": False}).status_code == 409  # not yourself


# ---------------------------------------------------------------- roles and scope


def test_nothing_outside_your_environments_is_visible(world, as_user) -> None:
    vic = as_user("vic")
    assert [e["name"] for e in vic.get("/environments").json()["items"]] == ["dev"]
    assert sorted(s["hostname"] for s in vic.get("/systems").json()["items"]) == ["s1", "s2"]
    assert vic.get("/environments/prod").status_code == 404
    assert vic.get("/systems/p1").status_code == 404
    hidden = vic.get("/hypervisors/psim")
    assert hidden.status_code == 404 and hidden.json()["detail"] == "no hypervisor 'psim'"
    assert [h["name"] for h in vic.get("/hypervisors").json()["items"]] == ["sim"]
    assert vic.get("/systems", params={"environment": "prod"}).status_code == 404


def test_viewers_read_users_act_on_their_own_operators_on_all(api, world, as_user) -> None:
    vic, uma, olga = as_user("vic"), as_user("uma"), as_user("olga")
    refused = act(vic, "s1", "create")
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    made = uma.post("/systems", json={"hostname": "mine", "environment": "dev", "hypervisor": "sim", "cpu": 1})
    assert made.status_code == 422  # cpu belongs under machine: validation still comes first for allowed callers
    made = uma.post("/systems", json={"hostname": "mine", "environment": "dev", "hypervisor": "sim"})
    assert made.status_code == 201 and made.json()["owner"] == "uma"
    assert act(uma, "s1", "create").status_code == 403  # s1 is the admin's
    assert act_and_wait(uma, "mine", "create")["status"] == "succeeded"
    assert wait_job(olga, act(olga, "s1", "create").json()["id"])["status"] == "succeeded"
    # A user cannot give a system to someone else; an operator can.
    assert uma.post("/systems", json={"hostname": "gift", "environment": "dev", "owner": "olga"}).status_code == 403
    given = olga.post("/systems", json={"hostname": "given", "environment": "dev", "owner": "uma"})
    assert given.status_code == 201 and given.json()["owner"] == "uma"
    # Catalog changes are for admins; a hidden environment in a body is an unknown reference.
    assert olga.post("/types", json={"name": "x"}).status_code == 403
    hidden_env = uma.post("/systems", json={"hostname": "sneak", "environment": "prod"})
    assert hidden_env.status_code == 422 and hidden_env.json()["errors"][0]["field"] == "environment"


def test_jobs_are_visible_in_your_environments_and_bulk_jobs_stay_in_scope(api, world, as_user) -> None:
    uma, vic = as_user("uma"), as_user("vic")
    prod_job = act_and_wait(api, "p1", "create")
    assert vic.get(f"/jobs/{prod_job['id']}").status_code == 404
    assert all(j["system_id"] != prod_job["system_id"] for j in vic.get("/jobs").json()["items"])
    uma.post("/systems", json={"hostname": "u1", "environment": "dev", "hypervisor": "sim", "labels": {"team": "u"}})
    api.patch("/systems/s1", json={"labels": {"team": "u"}})
    wide = uma.post("/jobs", json={"action": "create", "selector": {"labels": {"team": "u"}}})
    assert wide.status_code == 403 and "1 systems you may not act on" in wide.json()["detail"]
    mine = uma.post("/jobs", json={"action": "create", "selector": {"systems": ["u1"]}})
    assert mine.status_code == 202 and mine.json()["actor"] == "uma"
    assert wait_job(uma, mine.json()["id"])["status"] == "succeeded"
    assert vic.get(f"/jobs/{mine.json()['id']}").status_code == 404  # a bulk job is its starter's


# ---------------------------------------------------------------- quotas


def test_quota_refuses_with_the_limit_and_usage_and_destroy_gives_back(api, world, as_user) -> None:
    grant(world["db"], "uma", "dev", "user", max_systems=2, max_cpu=3)
    uma = as_user("uma")
    for name, cpu in (("q1", 1), ("q2", 1), ("q3", 1), ("big", 4)):
        made = uma.post("/systems", json={"hostname": name, "environment": "dev", "hypervisor": "sim",
                                          "machine": {"cpu": cpu}})
        assert made.status_code == 201
    too_big = act(uma, "big", "create")
    assert too_big.status_code == 403
    body = too_big.json()
    assert body["type"].endswith(":quota-exceeded") and body["limit"] == "cpu" and body["quota"] == 3
    assert act_and_wait(uma, "q1", "create")["status"] == "succeeded"
    assert act_and_wait(uma, "q2", "create")["status"] == "succeeded"
    over = act(uma, "q3", "create")
    assert over.status_code == 403 and over.json()["limit"] == "systems" and over.json()["usage"] == 2
    assert "may hold 2 systems" in over.json()["detail"] and "uses 2" in over.json()["detail"]
    me = uma.get("/auth/me").json()["roles"][0]
    assert me["quota"]["max_systems"] == 2 and me["usage"] == {"systems": 2, "cpu": 2, "memory_mb": 0}
    assert act_and_wait(uma, "q1", "destroy")["status"] == "succeeded"
    assert uma.get("/auth/me").json()["roles"][0]["usage"]["systems"] == 1
    assert act_and_wait(uma, "q3", "create")["status"] == "succeeded"


def test_a_cancelled_create_gives_its_quota_back(api, world, as_user) -> None:
    grant(world["db"], "uma", "dev", "user", max_systems=1)
    api.post("/hypervisors", json={"name": "slow", "environment": "dev", "driver": "simulated",
                                   "config": {"latency_ms": 1500}})
    uma = as_user("uma")
    for name in ("c1", "c2"):
        assert uma.post("/systems", json={"hostname": name, "environment": "dev", "hypervisor": "slow"}).status_code == 201
    job = act(uma, "c1", "create").json()
    assert act(uma, "c2", "create").status_code == 403  # c1 holds the only slot
    assert uma.post(f"/jobs/{job['id']}/cancel").status_code == 202  # during the 1.5 s create
    assert wait_job(uma, job["id"])["status"] == "cancelled"
    assert uma.get("/systems/c1").json()["state"] == "defined"  # the machine was undone...
    assert uma.get("/auth/me").json()["roles"][0]["usage"]["systems"] == 0  # ...and its quota given back
    assert act_and_wait(uma, "c2", "create")["status"] == "succeeded"


def test_a_reservation_whose_create_never_ran_is_given_back_at_the_next_check(api, world, as_user) -> None:
    from armillary.domain.accounts import QuotaCharge, RoleGrant, User
    from armillary.domain.models import System

    grant(world["db"], "uma", "dev", "user", max_systems=1)
    uma = as_user("uma")
    for name in ("n1", "n2"):
        uma.post("/systems", json={"hostname": name, "environment": "dev", "hypervisor": "sim"})
    with world["db"].session() as session:  # what a create cancelled while still queued leaves behind
        uma_id = session.query(User.id).filter(User.name == "uma").scalar()
        row = session.query(RoleGrant).filter(RoleGrant.user_id == uma_id).one()
        n1 = session.query(System).filter(System.hostname == "n1").one()
        session.add(QuotaCharge(system_id=n1.id, grant_id=row.id, cpu=0, memory_mb=0))
        row.used_systems = 1
    assert act_and_wait(uma, "n2", "create")["status"] == "succeeded"  # n1 holds nothing: its slot is free


@pytest.mark.timeout(180)
def test_fifty_concurrent_creates_against_a_quota_of_ten_accept_exactly_ten(api, world) -> None:
    grant(world["db"], "uma", "dev", "user", max_systems=10)
    items = [{"hostname": f"r{i:02d}", "environment": "dev", "hypervisor": "sim", "owner": "uma"} for i in range(50)]
    assert api.post("/systems/import", json={"items": items}).status_code == 201
    token = token_for(world["db"], "uma")
    results: list[int] = []
    barrier = threading.Barrier(50)

    def fire(name: str) -> None:
        with httpx.Client(base_url=world["url"], headers=bearer(token), timeout=120) as client:
            barrier.wait()
            results.append(client.post(f"/systems/{name}/actions", json={"action": "create"}).status_code)

    threads = [threading.Thread(target=fire, args=(item["hostname"],)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [202] * 10 + [403] * 40
    with httpx.Client(base_url=world["url"], headers=bearer(token)) as uma:
        assert uma.get("/auth/me").json()["roles"][0]["usage"]["systems"] == 10
    jobs = api.get("/jobs", params={"action": "create", "limit": 100}).json()["items"]
    assert len(jobs) == 10
    assert {wait_job(api, job["id"])["status"] for job in jobs} == {"succeeded"}


# ---------------------------------------------------------------- environment locks


def test_lock_refuses_every_change_with_who_when_why_but_not_admins(api, world, as_user) -> None:
    olga, uma, vic = as_user("olga"), as_user("uma"), as_user("vic")
    assert vic.post("/environments/dev/lock", json={"reason": "x"}).status_code == 403
    assert olga.post("/environments/prod/lock", json={"reason": "x"}).status_code == 404
    locked = olga.post("/environments/dev/lock", json={"reason": "release freeze"}).json()
    assert locked["locked"] and locked["locked_by"] == "olga" and locked["locked_at"]
    for response in (
        uma.post("/systems", json={"hostname": "new", "environment": "dev"}),
        olga.patch("/systems/s1", json={"labels": {"x": "y"}}),
        olga.delete("/systems/s2"),
        act(olga, "s1", "create"),
    ):
        assert response.status_code == 409, response.text
        assert "olga" in response.json()["detail"] and "release freeze" in response.json()["detail"]
    assert olga.post("/environments/dev/lock", json={"reason": "again"}).status_code == 409
    assert api.patch("/systems/s1", json={"labels": {"fix": "1"}}).status_code == 200  # admins pass
    assert uma.post("/environments/dev/unlock").status_code == 403
    assert olga.post("/environments/dev/unlock").json()["locked"] is False
    assert act_and_wait(olga, "s1", "create")["status"] == "succeeded"

"""Logging in to the API with directory accounts from a real OpenLDAP slapd; groups become roles."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from armillary.auth.ldap import LdapSettings, parse_group_roles
from tests.support.accounts import ADMIN, bearer, ensure_user, token_for
from tests.support.databases import database
from tests.support.server import running_app
from tests.support.slapd import Slapd, running_slapd


@pytest.fixture(scope="module")
def slapd(tmp_path_factory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("ldap-login")) as peer:
        yield peer


@pytest.fixture(scope="module")
def server(slapd: Slapd, tmp_path_factory) -> Iterator[str]:
    """Armillary with a search-then-bind LDAP login over StartTLS, verified against the test CA."""
    ldap = LdapSettings(
        url=slapd.url, starttls=True, ca_file=slapd.ca_file, bind_dn=slapd.service_dn,
        bind_password=slapd.service_password, user_base=slapd.people_dn, group_base=slapd.groups_dn,
        group_roles=tuple(parse_group_roles("armillary-admins=admin; ops=operator@dev; devs=user@dev; "
                                            "qa=viewer@qa,dev; ghosts=user@nowhere")),
    )
    data_dir = tmp_path_factory.mktemp("ldap-server")
    with database("sqlite", data_dir) as url, running_app(url, data_dir, ldap=ldap, engine="off") as (base, db):
        ensure_user(db, ADMIN, admin=True)
        with httpx.Client(base_url=base + "/api/v1", headers=bearer(token_for(db, ADMIN))) as admin:
            for env in ("dev", "qa"):
                assert admin.post("/environments", json={"name": env}).status_code == 201
        yield base + "/api/v1"


def login(server: str, username: str, password: str) -> httpx.Response:
    return httpx.post(f"{server}/auth/login", json={"username": username, "password": password}, timeout=30)


def me(server: str, token: str) -> dict:
    return httpx.get(f"{server}/auth/me", headers=bearer(token)).json()


def test_directory_user_logs_in_and_groups_become_roles(server: str, slapd: Slapd) -> None:
    response = login(server, "carol", slapd.users["carol"])
    assert response.status_code == 200, response.text
    account = me(server, response.json()["token"])
    assert account["name"] == "carol" and account["source"] == "ldap" and account["admin"] is False
    assert account["display_name"] == "Carol Developer"
    # devs=user@dev beats qa=viewer@dev (the strongest role wins); qa gives viewer in qa.
    assert {r["environment"]: r["role"] for r in account["roles"]} == {"dev": "user", "qa": "viewer"}
    assert all(r["source"] == "ldap" for r in account["roles"])


def test_admin_group_makes_an_admin_and_operator_group_an_operator(server: str, slapd: Slapd) -> None:
    alice = me(server, login(server, "alice", slapd.users["alice"]).json()["token"])
    assert alice["admin"] is True
    bob_token = login(server, "BOB", slapd.users["bob"]).json()["token"]
    bob = me(server, bob_token)
    assert bob["name"] == "bob" and {r["environment"]: r["role"] for r in bob["roles"]} == {"dev": "operator"}
    assert httpx.get(f"{server}/environments/qa", headers=bearer(bob_token)).status_code == 404


def test_wrong_password_is_401_without_saying_which_part_was_wrong(server: str, slapd: Slapd) -> None:
    wrong = login(server, "bob", "not-bobs-password")
    unknown = login(server, "zed", "whatever-password")
    empty = login(server, "bob", "")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid username or password"
    assert empty.status_code in (401, 422)


def test_a_user_without_mapped_groups_logs_in_but_sees_nothing(server: str, slapd: Slapd) -> None:
    token = login(server, "dave", slapd.users["dave"]).json()["token"]
    assert me(server, token)["roles"] == []
    assert httpx.get(f"{server}/environments", headers=bearer(token)).json()["items"] == []


def test_unreachable_directory_is_a_503_not_a_wrong_password(slapd: Slapd, tmp_path) -> None:
    ldap = LdapSettings(url="ldap://127.0.0.1:9", user_dn_template=slapd.user_dn_template, timeout_s=1)
    with database("sqlite", tmp_path) as url, running_app(url, tmp_path, ldap=ldap, engine="off") as (base, _db):
        response = login(base + "/api/v1", "bob", slapd.users["bob"])
    assert response.status_code == 503 and response.json()["type"].endswith(":directory-unavailable")

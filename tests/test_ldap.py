"""armillary.auth.ldap against a real OpenLDAP slapd (tests/support/slapd.py): binds, search, TLS, errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from armillary.auth.ldap import (
    GroupRole,
    LdapIdentity,
    LdapSettings,
    LdapUnavailable,
    authenticate,
    parse_group_roles,
    roles_for,
)
from tests.support.slapd import (
    DISPLAY_NAMES,
    MEMBERSHIPS,
    ODD_USER,
    Slapd,
    free_port,
    running_slapd,
    write_ca,
)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("ldap")) as peer:
        yield peer


def direct(peer: Slapd, **overrides) -> LdapSettings:
    """Direct bind through the DN template; groups read as the user."""
    settings = LdapSettings(url=peer.url, user_dn_template=peer.user_dn_template, group_base=peer.groups_dn)
    return replace(settings, **overrides)


def searching(peer: Slapd, **overrides) -> LdapSettings:
    """Search-then-bind through the service account, which also reads the groups."""
    settings = LdapSettings(url=peer.url, bind_dn=peer.service_dn, bind_password=peer.service_password,
                            user_base=peer.people_dn, group_base=peer.groups_dn)
    return replace(settings, **overrides)


MODES = {"direct": direct, "search": searching}


# --- logins -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("uid", ["alice", "bob", "carol", "dave", ODD_USER])
def test_right_password_gives_identity_and_groups(slapd: Slapd, mode: str, uid: str) -> None:
    identity = authenticate(MODES[mode](slapd), uid, slapd.users[uid])
    assert identity is not None
    assert identity.dn.lower() == slapd.user_dn(uid).replace("\\,", "\\2C").lower()  # as slapd spells it
    assert identity == LdapIdentity(
        username=uid, dn=identity.dn, display_name=DISPLAY_NAMES[uid],
        email=None if uid in ("dave", ODD_USER) else f"{uid}@armillary.test", groups=MEMBERSHIPS[uid],
    )


@pytest.mark.parametrize("mode", MODES)
def test_both_group_styles_are_found(slapd: Slapd, mode: str) -> None:
    """carol is in qa (groupOfNames, member=DN) and devs (posixGroup, memberUid=uid)."""
    identity = authenticate(MODES[mode](slapd), "carol", "carol-pw")
    assert identity is not None and identity.groups == ("devs", "qa")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("alice", "wrong"),  # wrong password
        ("alice", "bob-pw"),  # someone else's password
        ("mallory", "whatever"),  # no such user
        ("alice", ""),  # empty password: an unauthenticated bind, which the server would accept
        ("", "alice-pw"),
        ("*", "alice-pw"),  # filter injection: must match nothing, not everyone
        ("alice)(uid=*", "alice-pw"),
        ("al*", "alice-pw"),
        ("alice,ou=people", "alice-pw"),  # DN injection
        ("eve,(qa)", "eve-pw"),  # a prefix of the odd uid, not the uid
        ("alice\x00", "alice-pw"),  # control characters: never a user name
        ("{dn}", "alice-pw"),
        ("alice\\", "alice-pw"),
    ],
)
def test_refused_logins_are_none(slapd: Slapd, mode: str, username: str, password: str) -> None:
    assert authenticate(MODES[mode](slapd), username, password) is None


def test_empty_password_never_contacts_the_server(slapd: Slapd) -> None:
    """Even with an unreachable server there is no error: the answer is None before any connection."""
    settings = LdapSettings(url=f"ldap://127.0.0.1:{free_port()}", user_dn_template=slapd.user_dn_template)
    assert authenticate(settings, "alice", "") is None


@pytest.mark.parametrize("mode", MODES)
def test_user_name_takes_the_directory_spelling(slapd: Slapd, mode: str) -> None:
    identity = authenticate(MODES[mode](slapd), "ALICE", "alice-pw")
    assert identity is not None and identity.username == "alice" and identity.groups == ("armillary-admins",)


def test_no_group_base_means_no_groups(slapd: Slapd) -> None:
    identity = authenticate(direct(slapd, group_base=None), "alice", "alice-pw")
    assert identity is not None and identity.groups == ()


def test_custom_group_filter_and_attribute(slapd: Slapd) -> None:
    """Only groupOfNames, named by their DN's cn through another attribute spelling."""
    settings = searching(slapd, group_filter="(&(objectClass=groupOfNames)(member={dn}))",
                         group_name_attribute="CN")
    identity = authenticate(settings, "carol", "carol-pw")
    assert identity is not None and identity.groups == ("qa",)


def test_search_matching_several_entries_is_refused(slapd: Slapd) -> None:
    """A filter that finds more than one person must not log anyone in as the first of them."""
    settings = searching(slapd, user_filter="(|(uid={username})(objectClass=posixAccount))")
    assert authenticate(settings, "alice", "alice-pw") is None


# --- TLS ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_starttls_with_the_ca(slapd: Slapd, mode: str) -> None:
    identity = authenticate(MODES[mode](slapd, starttls=True, ca_file=slapd.ca_file), "bob", "bob-pw")
    assert identity is not None and identity.groups == ("ops",)


@pytest.mark.parametrize("mode", MODES)
def test_ldaps_with_the_ca(slapd: Slapd, mode: str) -> None:
    identity = authenticate(MODES[mode](slapd, url=slapd.ldaps_url, ca_file=slapd.ca_file), "bob", "bob-pw")
    assert identity is not None and identity.groups == ("ops",)
    assert authenticate(MODES[mode](slapd, url=slapd.ldaps_url, ca_file=slapd.ca_file), "bob", "nope") is None


def test_ldaps_by_host_name(slapd: Slapd) -> None:
    """The certificate names localhost too; the host name is checked against it."""
    url = slapd.ldaps_url.replace("127.0.0.1", "localhost")
    assert authenticate(direct(slapd, url=url, ca_file=slapd.ca_file), "bob", "bob-pw") is not None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", ["starttls", "ldaps"])
def test_tls_with_another_ca_is_unavailable(slapd: Slapd, tmp_path: Path, mode: str, transport: str) -> None:
    other_ca, _, _ = write_ca(tmp_path, "Some Other CA")
    tls = {"starttls": True} if transport == "starttls" else {"url": slapd.ldaps_url}
    with pytest.raises(LdapUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        authenticate(MODES[mode](slapd, ca_file=str(other_ca), **tls), "bob", "bob-pw")


def test_tls_with_system_cas_does_not_trust_a_private_ca(slapd: Slapd) -> None:
    """No ca_file: the system's CAs, which never signed the test CA; verification is never switched off."""
    with pytest.raises(LdapUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        authenticate(direct(slapd, url=slapd.ldaps_url), "bob", "bob-pw")


# --- the directory failing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_unreachable_server_is_unavailable_quickly(slapd: Slapd, mode: str) -> None:
    settings = MODES[mode](slapd, url=f"ldap://127.0.0.1:{free_port()}", timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(LdapUnavailable, match="Connection refused"):
        authenticate(settings, "alice", "alice-pw")
    assert time.monotonic() - started < 1.5


def test_silent_server_times_out(slapd: Slapd) -> None:
    """A port that accepts connections but never answers (a hung directory): LdapUnavailable on timeout."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        settings = direct(slapd, url=f"ldap://127.0.0.1:{listener.getsockname()[1]}", timeout_s=0.5)
        started = time.monotonic()
        with pytest.raises(LdapUnavailable):
            authenticate(settings, "alice", "alice-pw")
        assert time.monotonic() - started < 3


@pytest.mark.parametrize("password", ["wrong", "alice-pw"])
def test_wrong_service_password_is_unavailable_not_none(slapd: Slapd, password: str) -> None:
    with pytest.raises(LdapUnavailable, match="service bind"):
        authenticate(searching(slapd, bind_password="not-the-service-password"), "alice", password)


def test_unknown_service_account_is_unavailable(slapd: Slapd) -> None:
    with pytest.raises(LdapUnavailable, match="service bind"):
        authenticate(searching(slapd, bind_dn=f"cn=nobody,{slapd.base_dn}"), "alice", "alice-pw")


def test_anonymous_search_that_may_read_nothing_finds_nobody(slapd: Slapd) -> None:
    """This directory lets anonymous read nothing: without a service account, search mode finds no user."""
    settings = searching(slapd, bind_dn=None, bind_password=None)
    assert authenticate(settings, "alice", "alice-pw") is None


# --- group → role mapping -----------------------------------------------------------------------------------


def test_parse_group_roles() -> None:
    text = "armillary-admins=admin; ops=operator@prod,qa;devs=user@dev\n Domain Users = VIEWER @ prod , dev ;"
    assert parse_group_roles(text) == [
        GroupRole("armillary-admins", "admin", ()),
        GroupRole("ops", "operator", ("prod", "qa")),
        GroupRole("devs", "user", ("dev",)),
        GroupRole("Domain Users", "viewer", ("prod", "dev")),
    ]
    assert parse_group_roles("") == [] and parse_group_roles(" ; ") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ops=root@prod", "unknown role 'root'"),
        ("ops=operator", "needs environments"),
        ("ops=operator@", "needs environments"),
        ("ops=operator@ , ", "needs environments"),
        ("=admin", "expected 'group=role"),
        ("ops", "expected 'group=role"),
        ("admins=admin@prod", "admin is global"),
        ("admins=admin; ops=", "unknown role ''"),
    ],
)
def test_parse_group_roles_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_group_roles(text)


def test_roles_for_strongest_wins() -> None:
    settings = LdapSettings(url="ldap://directory", user_base="ou=people,dc=x", group_roles=tuple(
        parse_group_roles("Admins=admin; ops=operator@prod; devs=user@prod,dev; all=viewer@prod,dev,qa")))
    assert roles_for(settings, []) == (False, {})
    assert roles_for(settings, ["unmapped"]) == (False, {})
    assert roles_for(settings, ["admins"]) == (True, {})
    assert roles_for(settings, ["all", "DEVS"]) == (False, {"prod": "user", "dev": "user", "qa": "viewer"})
    assert roles_for(settings, ["all", "devs", "ops"]) == (False, {"prod": "operator", "dev": "user",
                                                                   "qa": "viewer"})
    assert roles_for(settings, ("ops", "ADMINS")) == (True, {"prod": "operator"})


def test_roles_for_a_real_login(slapd: Slapd) -> None:
    settings = direct(slapd, group_roles=tuple(parse_group_roles(
        "armillary-admins=admin; ops=operator@prod,qa; devs=user@dev; qa=viewer@qa,dev")))
    carol = authenticate(settings, "carol", "carol-pw")
    assert carol is not None and roles_for(settings, carol.groups) == (False, {"dev": "user", "qa": "viewer"})
    alice = authenticate(settings, "alice", "alice-pw")
    assert alice is not None and roles_for(settings, alice.groups) == (True, {})


# --- settings -----------------------------------------------------------------------------------------------


def test_from_env_off_when_no_url() -> None:
    assert LdapSettings.from_env({}) is None
    assert LdapSettings.from_env({"ARMILLARY_LDAP_URL": "  ", "ARMILLARY_LDAP_STARTTLS": "maybe"}) is None


def test_from_env_reads_everything(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here")
    settings = LdapSettings.from_env({
        "ARMILLARY_LDAP_URL": "ldap://directory.example:3389",
        "ARMILLARY_LDAP_STARTTLS": "TRUE",
        "ARMILLARY_LDAP_CA_FILE": str(ca),
        "ARMILLARY_LDAP_BIND_DN": "cn=svc,dc=example",
        "ARMILLARY_LDAP_BIND_PASSWORD": " svc-pw ",  # kept as given: spaces may be part of a password
        "ARMILLARY_LDAP_USER_BASE": "ou=people,dc=example",
        "ARMILLARY_LDAP_USER_FILTER": "(sAMAccountName={username})",
        "ARMILLARY_LDAP_GROUP_BASE": "ou=groups,dc=example",
        "ARMILLARY_LDAP_GROUP_FILTER": "(member={dn})",
        "ARMILLARY_LDAP_GROUP_ATTRIBUTE": "name",
        "ARMILLARY_LDAP_TIMEOUT": "2.5",
        "ARMILLARY_LDAP_GROUP_ROLES": "admins=admin; ops=operator@prod",
        "UNRELATED": "x",
    })
    assert settings == LdapSettings(
        url="ldap://directory.example:3389", starttls=True, ca_file=str(ca), bind_dn="cn=svc,dc=example",
        bind_password=" svc-pw ", user_base="ou=people,dc=example", user_filter="(sAMAccountName={username})",
        group_base="ou=groups,dc=example", group_filter="(member={dn})", group_name_attribute="name",
        timeout_s=2.5,
        group_roles=(GroupRole("admins", "admin", ()), GroupRole("ops", "operator", ("prod",))),
    )


def test_from_env_defaults() -> None:
    settings = LdapSettings.from_env({"ARMILLARY_LDAP_URL": "ldaps://directory",
                                      "ARMILLARY_LDAP_USER_DN_TEMPLATE": "uid={username},ou=people,dc=x"})
    assert settings == LdapSettings(url="ldaps://directory", user_dn_template="uid={username},ou=people,dc=x")
    assert not settings.starttls and settings.timeout_s == 5.0 and settings.group_roles == ()


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"ARMILLARY_LDAP_USER_DN_TEMPLATE": ""}, "ARMILLARY_LDAP_USER_BASE"),  # neither template nor base
        ({"ARMILLARY_LDAP_URL": "http://directory"}, "ARMILLARY_LDAP_URL"),
        ({"ARMILLARY_LDAP_URL": "ldap://"}, "ARMILLARY_LDAP_URL"),
        ({"ARMILLARY_LDAP_STARTTLS": "maybe"}, "ARMILLARY_LDAP_STARTTLS"),
        ({"ARMILLARY_LDAP_URL": "ldaps://directory", "ARMILLARY_LDAP_STARTTLS": "1"},
         "ARMILLARY_LDAP_STARTTLS"),
        ({"ARMILLARY_LDAP_TIMEOUT": "soon"}, "ARMILLARY_LDAP_TIMEOUT"),
        ({"ARMILLARY_LDAP_TIMEOUT": "0"}, "ARMILLARY_LDAP_TIMEOUT"),
        ({"ARMILLARY_LDAP_TIMEOUT": "inf"}, "ARMILLARY_LDAP_TIMEOUT"),
        ({"ARMILLARY_LDAP_CA_FILE": "/nonexistent/ca.pem"}, "ARMILLARY_LDAP_CA_FILE"),
        ({"ARMILLARY_LDAP_GROUP_ROLES": "ops=operator"}, "ARMILLARY_LDAP_GROUP_ROLES"),
        ({"ARMILLARY_LDAP_USER_DN_TEMPLATE": "uid=alice,dc=x"}, "ARMILLARY_LDAP_USER_DN_TEMPLATE"),
        ({"ARMILLARY_LDAP_USER_FILTER": "(uid=alice)"}, "ARMILLARY_LDAP_USER_FILTER"),
        ({"ARMILLARY_LDAP_BIND_DN": "cn=svc,dc=x"}, "ARMILLARY_LDAP_BIND_PASSWORD"),
    ],
)
def test_from_env_errors_name_the_variable(extra: dict[str, str], variable: str) -> None:
    env = {"ARMILLARY_LDAP_URL": "ldap://directory", "ARMILLARY_LDAP_USER_DN_TEMPLATE": "uid={username},dc=x",
           **extra}
    with pytest.raises(ValueError, match=f"^{variable}: "):
        LdapSettings.from_env(env)


def test_settings_are_checked_when_built_directly() -> None:
    with pytest.raises(ValueError, match="user_base"):
        LdapSettings(url="ldap://directory")


def test_slapd_peer_is_stopped_at_the_end(tmp_path: Path) -> None:
    """The helper itself: slapd answers inside the block and is gone (port closed) after it."""
    with running_slapd(tmp_path) as peer:
        assert authenticate(direct(peer), "dave", "dave-pw") is not None
    assert peer.process.poll() is not None
    with pytest.raises(LdapUnavailable):
        authenticate(direct(peer, timeout_s=1.0), "dave", "dave-pw")

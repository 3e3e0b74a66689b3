"""Signing in with the CLI: ``admin create-user``, ``login``/``logout``/``whoami``, ``token``, ``user``,
``audit`` and ``env lock``, run as subprocesses against a real ``armillary serve`` subprocess.

One server serves the module; its admin is signed in by the helper (tests/support/cli.py). Each
test that signs someone else in uses its own credentials directory (ARMILLARY_CONFIG_DIR) under
its tmp_path, and its own user and environment names. Passwords come from TEST_PASSWORDS, so the
last test can check that none of them reached the server's log or any output.
"""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import ADMIN, ADMIN_PASSWORD, TEST_PASSWORDS, bearer
from tests.support.cli import Cli, Result, Server, armillary_command, clean_env, credentials, serve

OPERATOR_PASSWORD, USER_PASSWORD, VIEWER_PASSWORD = TEST_PASSWORDS[1], TEST_PASSWORDS[2], TEST_PASSWORDS[3]
NOT_LOGGED_IN = "not logged in or the token expired: run `armillary login`"
OUTPUTS: list[Result] = []  # every run of the module, for the redaction check


def admin_cli(data_dir: Path, *args: str, password: str | None = None) -> Result:
    """``armillary admin ARGS`` on the database under ``data_dir`` (no server needed)."""
    env = clean_env(ARMILLARY_DATA_DIR=str(data_dir), **({"ARMILLARY_PASSWORD": password} if password else {}))
    done = subprocess.run(
        [*armillary_command(), "admin", *args], check=False, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, env=env,
    )
    result = Result(("admin", *args), done.returncode, done.stdout, done.stderr)
    OUTPUTS.append(result)
    return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-auth-server")


@pytest.fixture(scope="module")
def made_while_stopped(data_dir: Path) -> Result:
    """`armillary admin create-user` on a database no server has opened yet (it migrates first)."""
    return admin_cli(data_dir, "create-user", "root", "--admin", "--display-name", "Root", password=OPERATOR_PASSWORD)


@pytest.fixture(scope="module")
def server(data_dir: Path, made_while_stopped: Result) -> Iterator[Server]:
    with serve(data_dir) as running:
        yield running


class Signed(Cli):
    """A Cli that keeps what it printed, for the redaction check at the end."""

    def __call__(self, *args: str, **kwargs) -> Result:  # type: ignore[override]
        result = super().__call__(*args, **kwargs)
        OUTPUTS.append(result)
        return result


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    """The admin, signed in by the helper."""
    return Signed(server.url, tmp_path, server.config_dir)


@pytest.fixture
def anon(server: Server, tmp_path: Path) -> Cli:
    """Nobody signed in yet: an empty credentials directory of this test."""
    return Signed(server.url, tmp_path, tmp_path / "nobody")


def login(cli: Cli, user: str, password: str, *more: str) -> Result:
    return cli("login", "--username", user, *more, env={"ARMILLARY_PASSWORD": password})


# ---------------------------------------------------------------- admin create-user


def test_admin_create_user_with_the_server_stopped_then_running(
    made_while_stopped: Result, data_dir: Path, cli: Cli, anon: Cli
) -> None:
    assert made_while_stopped.code == 0, made_while_stopped
    assert made_while_stopped.out.strip() == "created admin user root"
    assert login(anon, "root", OPERATOR_PASSWORD).code == 0
    assert anon.json("whoami")["admin"] is True

    # While the server runs: a new user can log in at once; a taken name is refused.
    made = admin_cli(data_dir, "create-user", "dora", "--email", "dora@example.com", password=VIEWER_PASSWORD)
    assert made.code == 0 and made.out.strip() == "created user dora", made
    taken = admin_cli(data_dir, "create-user", "dora", password=VIEWER_PASSWORD)
    assert taken.code == 1 and "a user named 'dora' already exists" in taken.err, taken
    weak = admin_cli(data_dir, "create-user", "shorty", password="short")
    # Refused by the input schema (the minimum is stated in the OpenAPI document): a usage error, like a bad name.
    assert weak.code == 2 and "at least 8 characters" in weak.err, weak
    bad_name = admin_cli(data_dir, "create-user", "9lives", password=VIEWER_PASSWORD)
    assert bad_name.code == 2 and "name" in bad_name.err, bad_name
    assert login(anon, "dora", VIEWER_PASSWORD).code == 0
    dora = anon.json("whoami")
    assert (dora["name"], dora["admin"], dora["email"]) == ("dora", False, "dora@example.com")

    # --update-password: a locked-out user gets a new password (and is reactivated).
    assert anon.ok("logout")
    assert cli("user", "update", "dora", "--inactive").code == 0
    assert login(anon, "dora", VIEWER_PASSWORD).code == 1
    reset = admin_cli(data_dir, "create-user", "dora", "--update-password", password=USER_PASSWORD)
    assert reset.code == 0 and reset.out.strip() == "set a new password for user dora (reactivated)", reset
    assert login(anon, "dora", VIEWER_PASSWORD).code == 1
    assert login(anon, "dora", USER_PASSWORD).code == 0


# ---------------------------------------------------------------- login, whoami, logout


def test_not_logged_in_says_how_to_log_in(anon: Cli) -> None:
    result = anon("env", "list")
    assert result.code == 1 and result.out == ""
    assert "Authentication required (401)" in result.err and NOT_LOGGED_IN in result.err
    assert "request id:" in result.err and "Traceback" not in result.err


def test_login_with_a_wrong_password_exits_1_and_stores_nothing(anon: Cli) -> None:
    refused = login(anon, ADMIN, "not-the-password")
    assert refused.code == 1, refused
    assert "invalid username or password" in refused.err and "Traceback" not in refused.err
    assert NOT_LOGGED_IN not in refused.err  # the hint is for tokens, not for a refused login
    assert credentials(anon.config_dir) == {}
    unknown = login(anon, "nosuchuser", "whatever-it-is")
    assert unknown.code == 1 and "invalid username or password" in unknown.err


def test_login_stores_a_named_token_in_a_private_file_and_whoami_shows_the_user(anon: Cli) -> None:
    done = login(anon, ADMIN, ADMIN_PASSWORD, "--token-name", "laptop", "--expires-in-days", "7")
    assert done.code == 0, done
    assert done.out.startswith(f"logged in to {anon.url} as admin (token expires ")

    path = anon.config_dir / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(anon.config_dir.stat().st_mode) == 0o700
    entry = json.loads(path.read_text())["servers"][anon.url]
    assert entry["user"] == "admin" and entry["token"].startswith("arm_") and entry["expires_at"]

    # What is kept is the named token; the short-lived login token was revoked once used.
    tokens = anon.json("token", "list", "--revoked")
    kept = next(t for t in tokens if t["prefix"] == entry["token"][:10])
    assert (kept["name"], kept["kind"], kept["revoked_at"]) == ("laptop", "api", None)
    logins = [t for t in tokens if t["kind"] == "login"]
    assert logins and all(t["revoked_at"] for t in logins)
    listed = anon.ok("token", "list")
    assert "laptop" in listed.out and "*" in listed.out  # the one in use is marked

    shown = anon.ok("whoami")
    assert "admin" in shown.out and anon.url in shown.out
    me = anon.json("whoami")
    assert me["name"] == "admin" and me["admin"] is True
    assert anon.ok("whoami", "-o", "yaml").yaml()["name"] == "admin"

    # Logging in again replaces the stored token and revokes the old one.
    assert login(anon, ADMIN, ADMIN_PASSWORD, "--short").code == 0
    newer = json.loads(path.read_text())["servers"][anon.url]["token"]
    assert newer != entry["token"]
    assert httpx.get(anon.url + "/api/v1/auth/me", headers=bearer(entry["token"])).status_code == 401
    assert httpx.get(anon.url + "/api/v1/auth/me", headers=bearer(newer)).status_code == 200
    current = [t for t in anon.json("token", "list") if t["prefix"] == newer[:10]]
    assert current and current[0]["kind"] == "login"  # --short keeps the login token itself


def test_logout_revokes_and_forgets_the_token(anon: Cli) -> None:
    assert login(anon, ADMIN, ADMIN_PASSWORD).code == 0
    token = anon.token
    out = anon.ok("logout")
    assert out.out.strip() == f"logged out of {anon.url} (admin)"
    assert credentials(anon.config_dir)["servers"] == {}
    assert httpx.get(anon.url + "/api/v1/auth/me", headers=bearer(token)).status_code == 401
    again = anon.ok("logout")
    assert "not logged in" in again.out
    after = anon("whoami")
    assert after.code == 1 and NOT_LOGGED_IN in after.err


# ---------------------------------------------------------------- tokens


def test_token_create_list_revoke(cli: Cli, anon: Cli) -> None:
    made = cli.ok("token", "create", "ci-script", "--expires-in-days", "3")
    secret = made.out.strip().splitlines()[-1]
    assert secret.startswith("arm_") and "ci-script" in made.out
    assert "not shown again" in made.err
    listed = cli.json("token", "list")
    entry = next(t for t in listed if t["name"] == "ci-script")
    assert "token" not in entry and entry["prefix"] == secret[:10]

    # The token works from ARMILLARY_TOKEN or --token, with nothing stored.
    via_env = anon("whoami", "-o", "json", env={"ARMILLARY_TOKEN": secret})
    assert via_env.code == 0 and json.loads(via_env.out)["name"] == "admin", via_env
    assert json.loads(anon.ok("--token", secret, "whoami", "-o", "json").out)["name"] == "admin"

    assert cli.ok("token", "revoke", str(entry["id"])).out.strip() == f"Revoked token {entry['id']}."
    refused = anon("env", "list", env={"ARMILLARY_TOKEN": secret})
    assert refused.code == 1 and NOT_LOGGED_IN in refused.err and "ARMILLARY_TOKEN" in refused.err, refused
    assert all(t["id"] != entry["id"] for t in cli.json("token", "list"))

    forever = cli.json("token", "create", "forever-script", "--no-expiry")
    assert forever["expires_at"] is None and forever["token"].startswith("arm_")
    cli.ok("token", "revoke", str(forever["id"]))
    both = cli("token", "create", "x", "--no-expiry", "--expires-in-days", "2")
    assert both.code == 2


# ---------------------------------------------------------------- users, roles, quotas


def test_user_create_grant_and_whoami_as_that_user(cli: Cli, anon: Cli) -> None:
    cli.ok("env", "create", "quotaenv")
    made = cli("user", "create", "carol", "--display-name", "Carol Q", "--email", "carol@example.com",
               "-o", "json", env={"ARMILLARY_PASSWORD": USER_PASSWORD})
    assert made.code == 0, made
    assert json.loads(made.out)["name"] == "carol"
    taken = cli("user", "create", "carol", env={"ARMILLARY_PASSWORD": USER_PASSWORD})
    assert taken.code == 1 and "already exists" in taken.err

    granted = cli.ok("user", "grant", "carol", "quotaenv", "--role", "user", "--max-systems", "2",
                     "--max-memory", "8G")
    assert "Granted carol the user role in quotaenv" in granted.out and "8G" in granted.out
    bad_role = cli("user", "grant", "carol", "quotaenv", "--role", "king")
    assert bad_role.code == 2

    assert login(anon, "carol", USER_PASSWORD).code == 0
    me = anon.json("whoami")
    assert me["admin"] is False and me["display_name"] == "Carol Q"
    [role] = me["roles"]
    assert (role["environment"], role["role"]) == ("quotaenv", "user")
    assert role["quota"] == {"max_systems": 2, "max_cpu": None, "max_memory_mb": 8192}
    assert role["usage"] == {"systems": 0, "cpu": 0, "memory_mb": 0}
    table = anon.ok("whoami").out
    assert "carol" in table and "quotaenv" in table and "0 / 2" in table and "8G" in table

    # A non-admin cannot manage users.
    forbidden = anon("user", "list")
    assert forbidden.code == 1 and "(403)" in forbidden.err

    listed = cli.json("user", "list")
    assert "carol" in [u["name"] for u in listed["items"]]
    assert "carol" in cli.ok("user", "list", "-q", "car").out
    shown = cli.ok("user", "show", "carol").out
    assert "Carol Q" in shown and "quotaenv" in shown
    updated = cli.json("user", "update", "carol", "--display-name", "Carol Quota", "--no-admin")
    assert updated["display_name"] == "Carol Quota"
    assert cli("user", "update", "carol").code == 2  # nothing to change

    assert cli.ok("user", "revoke", "carol", "quotaenv").out.strip() == "Revoked carol's role in quotaenv."
    assert anon.json("whoami")["roles"] == []
    missing = cli("user", "revoke", "carol", "quotaenv")
    assert missing.code == 1 and "(404)" in missing.err

    cli.ok("user", "delete", "carol")
    gone = anon("whoami")  # deleting the account took its tokens with it
    assert gone.code == 1 and NOT_LOGGED_IN in gone.err


# ---------------------------------------------------------------- audit


def test_audit_lists_requests_for_admins_only(cli: Cli, anon: Cli, server: Server) -> None:
    cli.ok("env", "create", "auditenv")
    assert cli("user", "create", "erin", env={"ARMILLARY_PASSWORD": VIEWER_PASSWORD}).code == 0
    assert login(anon, "erin", VIEWER_PASSWORD).code == 0
    refused = anon("audit")
    assert refused.code == 1 and "(403)" in refused.err and "only admins" in refused.err, refused
    request_id = refused.err.split("request id:")[1].split()[0]

    page = cli.json("audit", "--user", "erin")
    paths = [(e["method"], e["path"].split("?")[0], e["status"]) for e in page["items"]]
    assert ("POST", "/api/v1/auth/login", 200) in paths and ("GET", "/api/v1/audit", 403) in paths
    assert [e["id"] for e in page["items"]] == sorted((e["id"] for e in page["items"]), reverse=True)

    table = cli.ok("audit", "--user", "erin", "--outcome", "refused").out
    assert "TIME" in table and "REQUEST ID" in table and request_id in table and "refused" in table
    one = cli.json("audit", "--request-id", request_id)
    assert [(e["username"], e["status"], e["outcome"]) for e in one["items"]] == [("erin", 403, "refused")]
    created = cli.json("audit", "--resource-type", "environments", "--method", "POST", "--limit", "1000")
    assert any(e["path"] == "/api/v1/environments" and e["status"] == 201 for e in created["items"])

    limited = cli("audit", "--limit", "1")
    assert limited.code == 0 and "--all" in limited.err
    assert len(cli.json("audit", "--limit", "20", "--all")["items"]) > 20
    assert cli.json("audit", "--since", "2999-01-01T00:00:00Z")["items"] == []
    assert cli("audit", "--outcome", "maybe").code == 2


# ---------------------------------------------------------------- env lock


def test_env_lock_and_unlock(cli: Cli) -> None:
    cli.ok("env", "create", "lockenv")
    locked = cli.ok("env", "lock", "lockenv", "--reason", "release freeze")
    assert locked.out.strip() == "Locked environment lockenv (by admin): release freeze"
    env = cli.json("env", "show", "lockenv")
    assert (env["locked"], env["lock_reason"], env["locked_by"]) == (True, "release freeze", "admin")
    twice = cli("env", "lock", "lockenv", "--reason", "again")
    assert twice.code == 1 and "(409)" in twice.err and "already locked by admin" in twice.err
    assert cli("env", "lock", "lockenv").code == 2  # --reason is required

    unlocked = cli.json("env", "unlock", "lockenv")
    assert unlocked["locked"] is False and unlocked["lock_reason"] is None
    assert cli.ok("env", "unlock", "lockenv").out.strip() == "Unlocked environment lockenv."
    missing = cli("env", "lock", "nosuchenv", "--reason", "x")
    assert missing.code == 1 and "(404)" in missing.err


# ---------------------------------------------------------------- last: nothing leaked


def test_no_password_in_the_outputs_or_the_servers_log(server: Server) -> None:
    assert OUTPUTS, "the other tests ran first"
    log = server.log_file.read_text()
    for password in TEST_PASSWORDS:
        assert password not in log
        for result in OUTPUTS:
            assert password not in result.out and password not in result.err, result

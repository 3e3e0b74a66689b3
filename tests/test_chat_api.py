"""/api/v1/chat (issue 18) on SQLite and PostgreSQL, and the bot's pure parts (grammar, limits, settings).

The bot itself on real chat servers: tests/test_chat.py (IRC) and tests/test_chat_xmpp.py (XMPP).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from armillary.chat import grammar, identity
from armillary.chat.connections import parse_url
from armillary.chat.paging import Pager
from armillary.chat.ratelimit import PerAccount, TokenBucket
from armillary.domain.accounts import AuditEvent
from tests.support.accounts import ensure_user


def test_connection_passwords_are_write_only(api):
    body = {"name": "libera", "protocol": "irc", "host": "irc.example.org", "port": 6697, "tls": True,
            "nick": "armillary", "sasl": True, "rooms": ["#ops"], "password": "chat-sasl-s3cret",
            "nickserv_password": "chat-nickserv-s3cret"}
    made = api.post("/chat/connections", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["secrets_set"] == ["nickserv_password", "password"]
    assert "chat-sasl-s3cret" not in made.text and "password" not in {k for k in made.json() if k != "secrets_set"}
    shown = api.get("/chat/connections/libera")
    assert "s3cret" not in shown.text and shown.headers["ETag"]
    changed = api.patch("/chat/connections/libera", json={"nickserv_password": "", "rooms": ["#ops", "#dev"]})
    assert changed.json()["secrets_set"] == ["password"] and changed.json()["rooms"] == ["#ops", "#dev"]
    assert api.post("/chat/connections", json=body).status_code == 409  # the name is taken
    assert api.post("/chat/connections", json={**body, "name": "x", "protocol": "carrier-pigeon"}).status_code == 422
    assert [c["name"] for c in api.get("/chat/connections").json()["items"]] == ["libera"]
    assert api.delete("/chat/connections/libera").status_code == 204


def test_link_codes_are_single_use_and_expire(api, live_server):
    code = api.post("/chat/link-codes").json()["code"]
    db = live_server[1]
    with db.session() as session:
        assert identity.redeem(session, code, "irc", "alice").name == "admin"
        assert identity.redeem(session, code, "irc", "mallory") is None  # spent
        user_id = ensure_user(db, "admin")
        stale, _ = identity.new_code(session, user_id, ttl=timedelta(seconds=-1))
        assert identity.redeem(session, stale, "irc", "bob") is None  # expired
        assert identity.linked_user(session, "irc", "alice").name == "admin"
        assert identity.linked_user(session, "irc", "bob") is None
        session.commit()
    accounts = api.get("/chat/accounts").json()
    assert [(a["connection"], a["account"], a["user"]) for a in accounts] == [("irc", "alice", "admin")]
    assert api.delete(f"/chat/accounts/{accounts[0]['id']}").status_code == 204
    with db.session() as session:
        assert identity.linked_user(session, "irc", "alice") is None
        # the code is never stored, nor written to the trail
        assert not [r for r in session.query(AuditEvent).all() if code in str(r.detail) or code in r.path]


def test_grammar_reads_selectors_and_params():
    parsed = grammar.parse('deploy role=web env=prod release=v2 web1 "web 2"')
    selector, params = grammar.selector_of(parsed)
    assert selector == {"environment": "prod", "labels": {"role": "web"}, "systems": ["web1", "web 2"]}
    assert params == {"release": "v2"}
    with pytest.raises(grammar.GrammarError):
        grammar.selector_of(grammar.parse("destroy"))  # selects nothing: never "everything"
    with pytest.raises(grammar.GrammarError, match="unknown command"):
        grammar.parse("rm -rf /")
    assert grammar.parse("!status web1").verb == "status"
    assert grammar.parse("lock prod 'db migration'").args == ["prod", "db migration"]


def test_rate_limits_and_flood_control():
    limits = PerAccount(rate=0.001, burst=3)
    assert [limits.allow("irc:alice") for _ in range(4)] == [True, True, True, False]
    assert limits.allow("irc:bob")  # per account
    bucket = TokenBucket(rate=20, burst=2)

    async def send_five() -> float:
        start = time.monotonic()
        for _ in range(5):
            await bucket.take()
        return time.monotonic() - start

    assert asyncio.run(send_five()) >= 0.14  # 2 at once, then one per 50 ms


def test_long_answers_page_and_more_continues():
    pager = Pager(page_lines=3)
    key = ("irc", "alice", "#ops")
    first = pager.first(key, [f"line {i}" for i in range(8)])
    assert first[:3] == ["line 0", "line 1", "line 2"] and "5 more lines" in first[3]
    assert pager.more(key)[:3] == ["line 3", "line 4", "line 5"]
    assert pager.more(key) == ["line 6", "line 7"]
    assert pager.more(key) == ["nothing more"]


def test_connection_urls_from_the_environment():
    irc = parse_url("ircs://armillary:pw@irc.example.org/ops,dev?sasl=1&nickserv=ns", "irc")
    assert (irc.host, irc.port, irc.tls, irc.sasl, irc.rooms) == ("irc.example.org", 6697, True, True, ["#ops", "#dev"])
    assert (irc.password, irc.nickserv_password, irc.name) == ("pw", "ns", "irc")
    plain = parse_url("irc://bot@127.0.0.1:6667/#ops", "irc")
    assert (plain.tls, plain.port, plain.rooms) == (False, 6667, ["#ops"])
    late = parse_url("irc://bot@127.0.0.1/#ops,#dev?name=proc&sasl=1", "irc")  # the query after the channels
    assert (late.name, late.sasl, late.rooms) == ("proc", True, ["#ops", "#dev"])
    xmpp = parse_url("xmpp://bot@example.org:secret@xmpp.example.org/ops@conference.example.org?name=jabber",
                     "xmpp")
    assert xmpp.name == "jabber" and xmpp.rooms == ["ops@conference.example.org"]


def test_cli_chat_link_and_connections(api, base_url, admin_token, tmp_path):
    from typer.testing import CliRunner

    from armillary.cli.main import app
    from tests.support.cli import clean_env

    env = clean_env(ARMILLARY_URL=base_url, ARMILLARY_TOKEN=admin_token, ARMILLARY_CONFIG_DIR=str(tmp_path))

    def cli(*args: str, stdin: str | None = None):
        done = CliRunner().invoke(app, list(args), env=env, input=stdin)
        assert done.exit_code == 0, (done.stdout, done.stderr, done.exception)
        return done.stdout

    linked = cli("chat", "link")
    code = linked.split("link ", 2)[-1].split()[0]
    assert len(code) == 10 and "private message" in linked
    cli("chat", "connections", "create", "oftc", "--protocol", "irc", "--host", "irc.oftc.example", "--port", "6697",
        "--tls", "--nick", "armillary", "--room", "#ops", "--password", stdin="cli-chat-s3cret\n")
    shown = cli("chat", "connections", "show", "oftc", "-o", "json")
    assert '"password"' in shown and "cli-chat-s3cret" not in shown  # listed in secrets_set, never its value
    assert "oftc" in cli("chat", "connections", "list")
    cli("chat", "connections", "delete", "oftc")


def test_a_held_confirmation_expires_and_is_per_account():
    from armillary.chat.adapters.base import Incoming
    from armillary.chat.commands import Commands, Held, Settings

    commands = Commands(db=None, api=None, settings=Settings(confirm_s=60))  # type: ignore[arg-type]
    parsed = grammar.parse("destroy db1")
    commands.held[("irc", "alice")] = Held("AB12", parsed, "#ops", until=time.monotonic() - 1)  # 60 s passed
    said = asyncio.run(commands.yes(Incoming("irc", "alice", "#ops", "yes AB12"), grammar.parse("yes AB12"),
                                    None, None))  # type: ignore[arg-type]
    assert "nothing to confirm" in said.lines[0] and ("irc", "alice") not in commands.held
    commands.held[("irc", "alice")] = Held("AB12", parsed, "#ops", until=time.monotonic() + 60)
    other = asyncio.run(commands.yes(Incoming("irc", "bob", "#ops", "yes AB12"), grammar.parse("yes AB12"),
                                     None, None))  # type: ignore[arg-type]
    assert "nothing to confirm" in other.lines[0] and ("irc", "alice") in commands.held  # bob's yes: not alice's

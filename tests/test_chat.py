"""The chat bot on a real IRC server (ngircd on loopback), talking to a real server (issue 18).

One ngircd, one Armillary server (SQLite, its own engine) and one bot per module; test users are raw IRC
connections. What users rely on: an unlinked nick may only ask for help; a one-time code links a nick to an
account; `status` answers; `stage` posts the FINAL result (✔/✗ per host, link to the job) in the channel;
a viewer is refused by the API's own rules; a prod `destroy` does nothing until `yes <code>`; a bot restarted
mid-job still posts the result; every command is an audit row with the chat account.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from armillary.chat.bot import Bot, BotThread
from armillary.chat.commands import Settings
from armillary.chat.connections import ConnectionConfig
from armillary.domain.accounts import AuditEvent
from armillary.domain.jobs import Job
from armillary.domain.models import Environment, Hypervisor, System
from tests.support.accounts import ensure_user, grant, token_for
from tests.support.chatpeers import IrcClient, ngircd
from tests.support.server import running_app
from tests.support.subprocess_server import ServerProcess

PUBLIC_URL = "http://armillary.example"
BOT = "armillary"
ROOM = "#ops"


def _seed(db) -> None:
    with db.session() as session:
        for env_name, hosts, latency in (("dev", ["web1", "web2"], 0), ("prod", ["db1"], 0),
                                         ("slow", ["slow1", "slow2"], 1200)):
            env = Environment(name=env_name, variables={})
            hv = Hypervisor(name=f"{env_name}-sim", environment=env, driver="simulated",
                            config={"latency_ms": latency} if latency else {})
            session.add_all([env, hv])
            session.add_all([System(hostname=h, environment=env, hypervisor=hv, addresses=[], driver_props={},
                                    variables={}, labels=[]) for h in hosts])
        session.commit()
    ensure_user(db, "admin", admin=True)
    for name in ("alice", "vic"):
        ensure_user(db, name)
    for env in ("dev", "prod", "slow"):
        grant(db, "alice", env, "operator")
    grant(db, "vic", "dev", "viewer")


class World:
    def __init__(self, base_url: str, db, app, irc_port: int) -> None:
        self.base_url, self.db, self.app, self.irc_port = base_url, db, app, irc_port
        self.irc_tls_port = 0
        self.bot: BotThread | None = None

    def start_bot(self) -> BotThread:
        config = ConnectionConfig(name="irc", protocol="irc", host="127.0.0.1", port=self.irc_port, nick=BOT,
                                  rooms=[ROOM])
        settings = Settings(public_url=PUBLIC_URL, page_lines=2, commands_per_minute=600, command_burst=50)
        self.bot = BotThread(lambda: Bot(self.app, self.db, [config], settings, lines_per_s=20, line_burst=20))
        return self.bot.start(ready_timeout_s=20)

    def link_code(self, user: str) -> str:
        response = httpx.post(f"{self.base_url}/api/v1/chat/link-codes",
                              headers={"Authorization": f"Bearer {token_for(self.db, user)}"})
        assert response.status_code == 201, response.text
        return response.json()["code"]

    def person(self, nick: str) -> IrcClient:
        client = IrcClient(self.irc_port, nick)
        client.join(ROOM)
        return client

    def link(self, client: IrcClient, user: str) -> None:
        client.say(BOT, f"link {self.link_code(user)}")
        assert f"acts as {user}" in reply(client, _bot_nick(self), client.nick)


def _bot_nick(world: World) -> str:
    assert world.bot is not None and world.bot.bot is not None
    return world.bot.bot.adapters["irc"].nick


def reply(client: IrcClient, bot: str, target: str, contains: str = "", timeout_s: float = 15) -> str:
    return client.message_from(bot, target, contains, timeout_s)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp("chat")
    apps = []
    with ngircd(tmp / "irc") as irc, running_app(f"sqlite:///{tmp / 'armillary.db'}", tmp / "data",
                                                  customize=apps.append, auto_migrate=True) as (base_url, db):
        _seed(db)
        w = World(base_url, db, apps[0], irc.port)
        w.irc_tls_port = irc.tls_port
        w.start_bot()
        try:
            yield w
        finally:
            if w.bot is not None:
                w.bot.stop()


@pytest.fixture(scope="module")
def alice(world) -> Iterator[IrcClient]:
    client = world.person("alice")
    world.link(client, "alice")
    yield client
    client.close()


def test_an_unlinked_nick_may_only_ask_for_help(world):
    mallory = world.person("mallory")
    try:
        mallory.say(ROOM, f"{BOT}: status web1")
        assert "not linked" in reply(mallory, _bot_nick(world), ROOM)
        mallory.say(ROOM, "!help")
        assert "commands:" in reply(mallory, _bot_nick(world), ROOM)
        mallory.say(BOT, "link NOTACODE")
        assert "unknown, used or expired" in reply(mallory, _bot_nick(world), "mallory")
    finally:
        mallory.close()


def test_a_link_code_works_once_and_status_answers_with_an_audit_row(world, alice):
    code = world.link_code("alice")
    eve = world.person("eve")
    try:
        eve.say(BOT, f"link {code}")
        assert "acts as alice" in reply(eve, _bot_nick(world), "eve")
        eve.say(BOT, f"link {code}")  # spent
        assert "unknown, used or expired" in reply(eve, _bot_nick(world), "eve")
    finally:
        eve.close()
    alice.say(ROOM, f"{BOT}: status web1")
    assert re.match(r"web1: \w+ · env dev", reply(alice, _bot_nick(world), ROOM, "web1"))
    with world.db.session() as session:
        row = session.scalars(select(AuditEvent).where(AuditEvent.action == "chat.status")
                              .order_by(AuditEvent.id.desc())).first()
        assert row is not None and row.username == "alice" and row.detail["chat_account"] == "irc:alice"
        # the API request the command made is audited too, under the same request id
        api_rows = session.scalars(select(AuditEvent).where(AuditEvent.request_id == row.request_id,
                                                            AuditEvent.method == "GET")).all()
        assert api_rows and all(r.username == "alice" for r in api_rows)


def test_stage_posts_the_final_result_with_hosts_and_link(world, alice):
    alice.say(ROOM, f"{BOT}: stage web1")
    started = reply(alice, _bot_nick(world), ROOM, "started")
    job_id = int(re.search(r"job #(\d+)", started).group(1))
    final = reply(alice, _bot_nick(world), ROOM, f"job #{job_id} stage:", timeout_s=60)
    assert final.startswith("alice: ✔") and "succeeded" in final and "web1 ✔" in final
    assert f"{PUBLIC_URL}/jobs/{job_id}" in final
    alice.say(ROOM, f"{BOT}: job {job_id}")
    assert "succeeded" in reply(alice, _bot_nick(world), ROOM, f"job #{job_id}")
    assert "✔ batch-1 (succeeded" in reply(alice, _bot_nick(world), ROOM, "batch-1")  # its steps, a line each
    alice.say(BOT, f"watch {job_id}")  # an ended job: its result comes at once, in private
    assert f"job #{job_id} stage: succeeded" in reply(alice, _bot_nick(world), "alice", "✔ job #")


def test_jobs_mine_and_attention(world, alice):
    alice.say(ROOM, f"{BOT}: jobs mine")
    assert re.match(r"#\d+ stage succeeded by alice", reply(alice, _bot_nick(world), ROOM, "by alice"))
    alice.say(ROOM, f"{BOT}: attention")
    assert reply(alice, _bot_nick(world), ROOM, "attention") == "nothing needs attention"
    alice.say(ROOM, f"{BOT}: status nosuchthing")
    assert "no system or cluster 'nosuchthing'" in reply(alice, _bot_nick(world), ROOM)


def test_a_viewer_is_refused_by_the_api_rules(world):
    vic = world.person("vic")
    try:
        world.link(vic, "vic")
        vic.say(ROOM, f"{BOT}: destroy web2")
        answer = reply(vic, _bot_nick(world), ROOM, "refused")
        assert "may not act on" in answer  # the API's own refusal (403), word for word
        with world.db.session() as session:
            web2 = session.scalars(select(System).where(System.hostname == "web2")).one()
            assert session.scalars(select(Job).where(Job.system_id == web2.id)).first() is None
    finally:
        vic.close()


def _jobs_on(db, hostname: str) -> list[Job]:
    with db.session() as session:
        system = session.scalars(select(System).where(System.hostname == hostname)).one()
        children = session.scalars(select(Job).where(Job.system_id == system.id)).all()
        return list(children)


def test_a_prod_destroy_needs_yes_code_from_the_same_account(world, alice):
    alice.say(ROOM, f"{BOT}: destroy db1")
    held = reply(alice, _bot_nick(world), ROOM, "needs confirmation")
    code = re.search(r"`yes (\w+)`", held).group(1)
    alice.say(ROOM, f"{BOT}: yes WRONG")
    assert "not the confirmation code" in reply(alice, _bot_nick(world), ROOM)
    mallory = world.person("mallory2")
    try:
        mallory.say(ROOM, f"{BOT}: yes {code}")  # another account: not linked, nothing happens
        assert "not linked" in reply(mallory, _bot_nick(world), ROOM)
    finally:
        mallory.close()
    time.sleep(0.5)
    assert _jobs_on(world.db, "db1") == []  # nothing happened without the confirmation
    alice.say(ROOM, f"{BOT}: yes {code}")
    started = reply(alice, _bot_nick(world), ROOM, "destroy started")
    job_id = int(re.search(r"job #(\d+)", started).group(1))
    final = reply(alice, _bot_nick(world), ROOM, f"job #{job_id} destroy:", timeout_s=60)
    assert "db1" in final


def test_a_bot_restarted_mid_job_still_posts_the_result(world, alice):
    alice.say(ROOM, f"{BOT}: stage slow1")
    started = reply(alice, _bot_nick(world), ROOM, "started")
    job_id = int(re.search(r"job #(\d+)", started).group(1))
    world.bot.stop()  # the job runs on in the server's engine; the promise is a row
    with world.db.session() as session:
        assert session.get(Job, job_id).status not in {"succeeded", "failed"}, "the job must outlive the bot"
    world.start_bot()
    final = alice.wait_for(lambda line: f"job #{job_id} stage:" in line and " PRIVMSG #ops :" in line, 60)
    assert "✔" in final and "slow1 ✔" in final and f"{PUBLIC_URL}/jobs/{job_id}" in final


def test_long_answers_are_paged_with_more(world, alice):
    alice.say(ROOM, f"{BOT}: list")
    reply(alice, _bot_nick(world), ROOM, "web1")
    assert "say 'more'" in reply(alice, _bot_nick(world), ROOM, "more lines")
    alice.say(ROOM, f"{BOT}: more")
    assert "slow1" in reply(alice, _bot_nick(world), ROOM, "slow1")


def test_lock_unlock_and_chat_notifications_reach_the_room(world, alice):
    """A subscription with a chat target (armillary.notify): the bot claims the delivery and posts it."""
    admin = {"Authorization": f"Bearer {token_for(world.db, 'admin')}"}
    made = httpx.post(f"{world.base_url}/api/v1/subscriptions", headers=admin, json={
        "name": "ops-room", "events": ["environment.locked"],
        "target": {"kind": "chat", "connection": "irc", "room": ROOM}})
    assert made.status_code == 201, made.text
    alice.say(ROOM, f"{BOT}: lock slow planned maintenance")
    assert "locked: planned maintenance" in reply(alice, _bot_nick(world), ROOM, "environment slow locked")
    notified = alice.wait_for(lambda line: " PRIVMSG #ops :" in line and "slow" in line and "lock" in line.lower()
                              and "environment slow locked:" not in line, 30)
    assert "slow" in notified
    alice.say(ROOM, f"{BOT}: unlock slow")
    assert "unlocked" in reply(alice, _bot_nick(world), ROOM, "environment slow")


def test_armillary_serve_starts_the_bot_when_a_connection_is_configured(world, tmp_path):
    """ARMILLARY_CHAT_IRC given to `armillary serve`: the bot joins beside the API, in the same process."""
    server = ServerProcess(tmp_path / "serve", env={
        "ARMILLARY_CHAT_IRC": f"irc://servebot@127.0.0.1:{world.irc_port}/#serve"}).start()
    person = IrcClient(world.irc_port, "sam")
    try:
        person.join("#serve")
        deadline = time.monotonic() + 30
        answer = None
        while answer is None and time.monotonic() < deadline:  # the bot joins once the server is up
            person.say("#serve", "servebot: help")
            try:
                answer = person.message_from("servebot", "#serve", "commands:", timeout_s=1)
            except AssertionError:
                continue
        assert answer is not None, "the bot of armillary serve never answered"
        with server.client() as admin:  # linked, a command goes through the server's own app
            code = admin.post("/chat/link-codes").json()["code"]
        person.say("servebot", f"link {code}")
        assert "acts as admin" in person.message_from("servebot", "sam", "linked")
        person.say("#serve", "servebot: status web9")
        assert "no system or cluster 'web9'" in person.message_from("servebot", "#serve", "web9")
    finally:
        person.close()
        server.stop()


def _bot_process(world: World, tmp_path: Path) -> subprocess.Popen:
    """`armillary bot` as its own process on the module server's database (the server's engine runs the jobs)."""
    env = {**os.environ, "ARMILLARY_DATABASE_URL": str(world.db.engine.url), "ARMILLARY_SECRET_KEY": "test-secret-key",
           "ARMILLARY_DATA_DIR": str(tmp_path), "ARMILLARY_PUBLIC_URL": PUBLIC_URL,
           "ARMILLARY_CHAT_IRC": f"irc://procbot@127.0.0.1:{world.irc_port}/#proc?name=proc"}
    return subprocess.Popen([str(Path(os.sys.executable).with_name("armillary")), "bot"], env=env,
                            stdout=(tmp_path / "bot.log").open("ab"), stderr=subprocess.STDOUT)


def _ask_until_answered(person: IrcClient, bot: str, text: str, contains: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:  # the bot joins when its process is up
        person.say(bot, text)
        try:
            return person.message_from(bot, person.nick, contains, timeout_s=1)
        except AssertionError:
            continue
    raise AssertionError(f"{bot} never answered {text!r}")


def test_armillary_bot_killed_mid_job_posts_the_result_after_restart(world, tmp_path):
    """`armillary bot` SIGKILLed while a job it started runs: the next `armillary bot` posts the result."""
    bot = _bot_process(world, tmp_path)
    person = IrcClient(world.irc_port, "kim")
    try:
        person.join("#proc")
        assert "acts as alice" in _ask_until_answered(person, "procbot", f"link {world.link_code('alice')}",
                                                      "linked")
        person.say("#proc", "procbot: stage slow2")
        started = person.message_from("procbot", "#proc", "started", timeout_s=30)
        job_id = int(re.search(r"job #(\d+)", started).group(1))
        bot.send_signal(signal.SIGKILL)
        bot.wait(10)
        with world.db.session() as session:
            assert session.get(Job, job_id).status not in {"succeeded", "failed"}, "the job must outlive the bot"
        bot = _bot_process(world, tmp_path)
        final = person.wait_for(lambda line: f"job #{job_id} stage:" in line and " PRIVMSG #proc :" in line, 60)
        assert "kim: ✔" in final and "slow2 ✔" in final and f"{PUBLIC_URL}/jobs/{job_id}" in final
    finally:
        person.close()
        if bot.poll() is None:
            bot.terminate()
            bot.wait(10)


def test_the_bot_connects_over_tls(world):
    """An ircs:// connection (ngircd's TLS port, a self-signed certificate: verify=0) works like a plain one."""
    from armillary.chat.connections import parse_url

    config = parse_url(f"ircs://tlsbot@127.0.0.1:{world.irc_tls_port}/#tls?verify=0&name=irc-tls", "irc")
    assert config.tls and not config.verify_tls
    bot = BotThread(lambda: Bot(world.app, world.db, [config], Settings(public_url=PUBLIC_URL))).start(
        ready_timeout_s=20)
    person = world.person("tia")
    try:
        person.join("#tls")
        person.say("#tls", "tlsbot: help status")
        assert "status <host" in person.message_from("tlsbot", "#tls", "status")
    finally:
        person.close()
        bot.stop()

"""The chat bot on a real XMPP server (prosody on loopback): direct messages and a multi-user chat room.

The same grammar as on IRC (tests/test_chat.py covers the commands in depth); here what is XMPP's own:
linking by a direct message from a bare JID, a command addressed to the bot in a MUC room answered in the
room, the speaker known by the real JID the (non-anonymous) room reveals, and a job result posted in the room.
"""

from __future__ import annotations

import asyncio
import gc
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import slixmpp

from armillary.chat.bot import Bot, BotThread
from armillary.chat.commands import Settings
from armillary.chat.connections import ConnectionConfig
from armillary.domain.models import Environment, Hypervisor, System
from tests.support.accounts import ensure_user, grant, token_for
from tests.support.chatpeers import prosody
from tests.support.server import running_app


class Person:
    """A test user: a slixmpp client on a thread of its own, collecting what it receives."""

    def __init__(self, jid: str, password: str, port: int, room: str) -> None:
        self.jid, self.room = jid, room
        self.received: list[tuple[str, str, str]] = []  # (type, from bare, body)
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(password, port), daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "the test XMPP client did not connect"

    def _run(self, password: str, port: int) -> None:
        asyncio.set_event_loop(self.loop)
        client = slixmpp.ClientXMPP(self.jid, password)
        client.register_plugin("xep_0045")
        client.enable_starttls = client.enable_direct_tls = False
        client.enable_plaintext = True
        client.plugin["feature_mechanisms"].unencrypted_plain = True
        self.client = client

        async def started(_event) -> None:
            client.send_presence()
            await client.plugin["xep_0045"].join_muc_wait(slixmpp.JID(self.room), self.jid.split("@")[0], maxstanzas=0)
            self.ready.set()

        client.add_event_handler("session_start", started)
        client.add_event_handler("message", lambda m: self.received.append((m["type"], m["from"].bare, m["body"])))
        client.connect("127.0.0.1", port)
        self.loop.run_forever()

    def say(self, to: str, body: str, groupchat: bool = False) -> None:
        self.loop.call_soon_threadsafe(lambda: self.client.send_message(
            mto=slixmpp.JID(to), mbody=body, mtype="groupchat" if groupchat else "chat"))

    def wait(self, pattern: str, kind: str, timeout_s: float = 20) -> str:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for index, (typ, _sender, body) in enumerate(self.received):
                if typ == kind and re.search(pattern, body or ""):
                    del self.received[: index + 1]
                    return body
            time.sleep(0.05)
        raise AssertionError(f"{self.jid}: no {kind} message matching {pattern!r}; got {self.received[-10:]}")

    def close(self) -> None:
        async def leave() -> None:
            await self.client.disconnect(wait=0.2)
            self.loop.stop()

        asyncio.run_coroutine_threadsafe(leave(), self.loop)
        self.thread.join(5)
        del self.client  # its clean-up needs an open loop: collect it now, not at exit
        gc.collect()


@pytest.fixture(scope="module")
def xmpp_world(tmp_path_factory) -> Iterator[tuple]:
    tmp: Path = tmp_path_factory.mktemp("chat-xmpp")
    apps = []
    with prosody(tmp / "xmpp") as server, running_app(f"sqlite:///{tmp / 'armillary.db'}", tmp / "data",
                                                      customize=apps.append, auto_migrate=True) as (base_url, db):
        bot_jid = server.register("armillary", "bot-pw-1")
        server.register("alice", "alice-xmpp-pw")
        room = f"ops@{server.muc}"
        with db.session() as session:
            env = Environment(name="dev", variables={})
            hv = Hypervisor(name="dev-sim", environment=env, driver="simulated", config={})
            session.add_all([env, hv, System(hostname="web1", environment=env, hypervisor=hv, addresses=[],
                                             driver_props={}, variables={}, labels=[])])
            session.commit()
        ensure_user(db, "alice")
        grant(db, "alice", "dev", "operator")
        config = ConnectionConfig(name="xmpp", protocol="xmpp", host="127.0.0.1", port=server.port, nick=bot_jid,
                                  password="bot-pw-1", rooms=[room], tls=False)
        bot = BotThread(lambda: Bot(apps[0], db, [config], Settings(public_url="http://armillary.example"),
                                    lines_per_s=20, line_burst=20)).start(ready_timeout_s=20)
        alice = Person(f"alice@{server.domain}", "alice-xmpp-pw", server.port, room)
        try:
            yield base_url, db, bot_jid, room, alice
        finally:
            alice.close()
            bot.stop()


def test_link_by_direct_message_then_stage_in_the_room(xmpp_world):
    base_url, db, bot_jid, room, alice = xmpp_world
    alice.say(room, "armillary: status web1", groupchat=True)
    assert "not linked" in alice.wait("not linked", "groupchat")
    code = httpx.post(f"{base_url}/api/v1/chat/link-codes",
                      headers={"Authorization": f"Bearer {token_for(db, 'alice')}"}).json()["code"]
    alice.say(bot_jid, f"link {code}")
    assert "acts as alice" in alice.wait("acts as", "chat")
    alice.say(room, "armillary: stage web1", groupchat=True)
    started = alice.wait(r"job #\d+ stage started", "groupchat")
    job_id = re.search(r"job #(\d+)", started).group(1)
    final = alice.wait(rf"job #{job_id} stage:", "groupchat", timeout_s=60)
    assert "✔" in final and "web1 ✔" in final and f"/jobs/{job_id}" in final

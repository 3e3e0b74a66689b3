"""XMPP with slixmpp: direct messages and multi-user chat rooms (XEP-0045).

The chat account is the bare JID: of the sender of a direct message, and in a room the occupant's real
JID, which the room tells the bot when it is non-anonymous (or the bot moderates it). In an anonymous room
the occupant's real JID is unknown, so the account is ``room/nick`` — which can only be linked with a code
sent from that room occupant in private, and is reported as such. In a room the bot answers messages
addressed to it (``armillary: …``, or ``!…``); every direct message is a command.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import slixmpp

from armillary.chat.adapters.base import Adapter, Incoming

log = logging.getLogger("armillary.chat.xmpp")


class XmppAdapter(Adapter):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.client: slixmpp.ClientXMPP | None = None
        self.room_nick = self.config.nick.split("@", 1)[0] or "armillary"
        self._tasks: set[asyncio.Task] = set()
        self._stopped = asyncio.Event()

    def _make_client(self) -> slixmpp.ClientXMPP:
        client = slixmpp.ClientXMPP(self.config.nick, self.config.password or "")
        for plugin in ("xep_0030", "xep_0045", "xep_0199"):
            client.register_plugin(plugin)
        if not self.config.tls:  # a loopback or test server: plain, and PLAIN over it
            client.enable_starttls = False
            client.enable_direct_tls = False
            client.enable_plaintext = True
            client.plugin["feature_mechanisms"].unencrypted_plain = True
        elif not self.config.verify_tls:
            client.ssl_context.check_hostname = False
            client.ssl_context.verify_mode = 0
        client.add_event_handler("session_start", self._started)
        client.add_event_handler("message", self._direct)
        client.add_event_handler("groupchat_message", self._groupchat)
        client.add_event_handler("disconnected", lambda _event: self.ready.clear())
        client.add_event_handler("failed_auth", lambda _event: log.warning("xmpp %s: authentication failed",
                                                                          self.name))
        return client

    async def run(self) -> None:
        self.client = self._make_client()
        self.client.connect(self.config.host, self.config.port)
        await self._stopped.wait()

    async def _started(self, _event: Any) -> None:
        assert self.client is not None
        self.client.send_presence()
        await self.client.get_roster()
        muc = self.client.plugin["xep_0045"]
        for room in self.config.rooms:
            joined = await muc.join_muc_wait(slixmpp.JID(room), self.room_nick, maxstanzas=0)
            presence = joined[0] if isinstance(joined, tuple) else joined  # (self-presence, history, ...)
            if 201 in presence["muc"]["status_codes"]:  # the bot made the room: it stays locked until configured
                await self._open_new_room(room)
        self.ready.set()

    async def _open_new_room(self, room: str) -> None:
        """Accept the server's default configuration ("instant room", XEP-0045 10.1.2) so others may join."""
        from slixmpp.plugins.xep_0004 import Form

        assert self.client is not None
        form = Form()
        form["type"] = "submit"
        try:
            await self.client.plugin["xep_0045"].set_room_config(slixmpp.JID(room), form)
        except (slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout) as exc:
            log.warning("xmpp %s: could not open the new room %s: %s", self.name, room, exc)

    def _spawn(self, message: Incoming) -> None:
        task = asyncio.create_task(self.on_message(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _direct(self, msg: Any) -> None:
        if msg["type"] not in ("chat", "normal") or not msg["body"]:
            return
        if msg["from"].bare in {r.lower() for r in self.config.rooms}:  # a private message through a room
            return
        self._spawn(Incoming(self.name, msg["from"].bare, None, msg["body"].strip()))

    def _groupchat(self, msg: Any) -> None:
        assert self.client is not None
        room, nick = msg["from"].bare, msg["mucnick"]
        if not msg["body"] or nick == self.room_nick or msg["subject"]:
            return
        text = msg["body"].strip()
        lowered = text.lower()
        for prefix in (f"{self.room_nick.lower()}:", f"{self.room_nick.lower()},", "!"):
            if lowered.startswith(prefix):
                text = text[len(prefix):].strip()
                break
        else:
            return
        real = self.client.plugin["xep_0045"].get_jid_property(slixmpp.JID(room), nick, "jid")
        account = slixmpp.JID(real).bare if real else f"{room}/{nick}"
        self._spawn(Incoming(self.name, account, room, text))

    async def send(self, target: str, lines: list[str]) -> None:
        assert self.client is not None
        kind = "groupchat" if self.is_room(target) else "chat"
        for chunk in _chunks(lines):  # XMPP carries many lines in one stanza: fewer stanzas, same bucket
            await self.out.take()
            self.client.send_message(mto=slixmpp.JID(target), mbody=chunk, mtype=kind)

    async def close(self) -> None:
        self.closing = True
        if self.client is not None:
            try:  # end the stream cleanly (its tasks finish) before the loop goes away
                await asyncio.wait_for(self.client.disconnect(wait=0.5), 3)
            except Exception as exc:  # noqa: BLE001 - already cut off: nothing left to end
                log.debug("xmpp %s: disconnect: %s", self.name, exc)
            self.client = None  # collected while the loop still runs (its clean-up needs the loop)
        self._stopped.set()


def _chunks(lines: list[str], size: int = 20) -> list[str]:
    return ["\n".join(lines[i:i + size]) for i in range(0, len(lines), size)]

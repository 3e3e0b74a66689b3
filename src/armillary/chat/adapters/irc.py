"""IRC: TLS, SASL PLAIN, NickServ IDENTIFY, channels and private messages — a small asyncio client.

Why hand-written: the bot needs a sliver of RFC 1459/2812 + IRCv3 (registration, CAP/SASL PLAIN, PING,
JOIN, PRIVMSG, 433 nick in use), about 150 lines on ``asyncio.open_connection``. The PyPI clients either
stalled (pydle: no release since 2022, breaks on recent Pythons) or bring their own event-loop model
(jaraco's ``irc`` is callback-threaded, its asyncio part is thin); ``bottom`` would fit but still needs the
SASL exchange written by hand. Owning these lines keeps the flood control (a token bucket on every
outgoing line but PONG) and the reconnect loop ours.

In a channel the bot answers lines addressed to it (``armillary: status web1``, or ``!status web1``);
in a private message every line is a command. The chat account is the nick: on a network with services,
run the bot where nicks are registered (NickServ) so that a nick is a person.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl

from armillary.chat.adapters.base import Adapter, Incoming, backoff

log = logging.getLogger("armillary.chat.irc")
PREFIX_COMMAND = "!"


def parse_line(line: str) -> tuple[str, str, list[str]]:
    """``(prefix, command, params)`` of one IRC line (the trailing parameter last)."""
    prefix = ""
    if line.startswith("@"):  # IRCv3 tags: not used
        line = line.split(" ", 1)[1] if " " in line else ""
    if line.startswith(":"):
        prefix, _, line = line[1:].partition(" ")
    trailing = None
    if " :" in line:
        line, trailing = line.split(" :", 1)
    elif line.startswith(":"):
        line, trailing = "", line[1:]
    parts = line.split()
    command, params = (parts[0].upper() if parts else ""), parts[1:]
    if trailing is not None:
        params.append(trailing)
    return prefix, command, params


class IrcAdapter(Adapter):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.nick = self.config.nick
        self.writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task] = set()
        self._joined: set[str] = set()

    async def run(self) -> None:
        attempt = 0
        while not self.closing:
            try:
                await self._session()
                attempt = 0
            except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
                log.warning("irc %s: connection to %s:%s lost: %s", self.name, self.config.host, self.config.port,
                            exc)
            self.ready.clear()
            if self.closing:
                break
            await backoff(attempt)
            attempt += 1

    async def _session(self) -> None:
        context = None
        if self.config.tls:
            context = ssl.create_default_context()
            if not self.config.verify_tls:
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        reader, writer = await asyncio.open_connection(self.config.host, self.config.port, ssl=context,
                                                       limit=64 * 1024)
        self.writer = writer
        self.nick = self.config.nick
        self._joined = set()
        try:
            if self.config.sasl and self.config.password:
                await self._raw("CAP REQ :sasl")
            elif self.config.password:
                await self._raw(f"PASS {self.config.password}")
            await self._raw(f"NICK {self.nick}")
            await self._raw(f"USER {self.nick[:9]} 0 * :Armillary bot")
            while not self.closing:
                data = await reader.readline()
                if not data:
                    raise ConnectionError("server closed the connection")
                await self._handle(data.decode("utf-8", "replace").rstrip("\r\n"))
        finally:
            self.writer = None
            writer.close()

    async def _raw(self, line: str) -> None:
        """Send one line now (registration, PONG): bypasses flood control."""
        if self.writer is None:
            raise ConnectionError("not connected")
        self.writer.write((line.replace("\r", " ").replace("\n", " ") + "\r\n").encode())
        await self.writer.drain()

    async def _handle(self, line: str) -> None:
        prefix, command, params = parse_line(line)
        if command == "PING":
            await self._raw(f"PONG :{params[-1] if params else ''}")
        elif command == "CAP" and len(params) >= 3 and params[1] == "ACK" and "sasl" in params[-1]:
            await self._raw("AUTHENTICATE PLAIN")
        elif command == "CAP" and len(params) >= 3 and params[1] == "NAK":
            log.warning("irc %s: the server refuses SASL", self.name)
            await self._raw("CAP END")
        elif command == "AUTHENTICATE" and params and params[0] == "+":
            token = f"{self.config.nick}\0{self.config.nick}\0{self.config.password}".encode()
            await self._raw(f"AUTHENTICATE {base64.b64encode(token).decode()}")
        elif command in {"903", "904", "905", "906", "907"}:
            if command != "903":
                log.warning("irc %s: SASL authentication failed (%s)", self.name, command)
            await self._raw("CAP END")
        elif command == "433":  # nick in use
            self.nick += "_"
            await self._raw(f"NICK {self.nick}")
        elif command == "001":
            self.nick = params[0] if params else self.nick
            if self.config.nickserv_password:
                await self._raw(f"PRIVMSG NickServ :IDENTIFY {self.config.nickserv_password}")
            for room in self.config.rooms:
                await self._raw(f"JOIN {room}")
            if not self.config.rooms:
                self.ready.set()
        elif command == "366" and len(params) >= 2:  # end of NAMES: a channel is joined
            self._joined.add(params[1].lower())
            if {r.lower() for r in self.config.rooms} <= self._joined:
                self.ready.set()
        elif command == "PRIVMSG" and len(params) >= 2:
            self._dispatch(prefix.split("!", 1)[0], params[0], params[1])

    def _dispatch(self, sender: str, target: str, text: str) -> None:
        if not sender or sender.lower() == self.nick.lower():
            return
        if target.startswith(("#", "&")):
            stripped = self._addressed(text)
            if stripped is None:
                return
            message = Incoming(self.name, sender, target, stripped)
        else:
            message = Incoming(self.name, sender, None, text.strip())
        task = asyncio.create_task(self.on_message(message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _addressed(self, text: str) -> str | None:
        """The command in a channel line meant for the bot (``nick: …``, ``nick, …``, ``!…``), else None."""
        text = text.strip()
        lowered = text.lower()
        for sep in (":", ","):
            if lowered.startswith(self.nick.lower() + sep):
                return text[len(self.nick) + 1:].strip()
        if text.startswith(PREFIX_COMMAND) and len(text) > 1:
            return text[1:]
        return None

    async def send(self, target: str, lines: list[str]) -> None:
        for line in lines:
            await self.out.take()
            await self._raw(f"PRIVMSG {target} :{line}" if line else f"PRIVMSG {target} : ")

    async def close(self) -> None:
        self.closing = True
        if self.writer is not None:
            try:
                await self._raw("QUIT :bye")
            except (OSError, ConnectionError):
                pass
            self.writer.close()

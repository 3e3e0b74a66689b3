"""The interface of a chat adapter: connect, receive addressed messages, send lines (flood-controlled).

Adding Slack, Mattermost or Matrix is one module implementing ``Adapter`` and one entry point in the
``armillary.chat_adapters`` group (``name = "package.module:Class"``); the grammar and everything else
are shared.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

from armillary.chat.connections import ConnectionConfig
from armillary.chat.ratelimit import TokenBucket

log = logging.getLogger("armillary.chat")
GROUP = "armillary.chat_adapters"


@dataclass
class Incoming:
    """A message for the bot: who (``account``: an IRC nick, a bare JID), where (``room``; None: private)."""

    connection: str
    account: str
    room: str | None
    text: str


Handler = Callable[[Incoming], Awaitable[None]]


class Adapter(ABC):
    """One connection. ``run`` connects and reads until ``close``, reconnecting with backoff."""

    def __init__(self, config: ConnectionConfig, on_message: Handler, *, lines_per_s: float = 2.0,
                 burst: float = 6) -> None:
        self.config = config
        self.on_message = on_message
        self.out = TokenBucket(lines_per_s, burst)  # flood control towards the server
        self.ready = asyncio.Event()
        self.closing = False

    @property
    def name(self) -> str:
        return self.config.name

    @abstractmethod
    async def run(self) -> None: ...

    @abstractmethod
    async def send(self, target: str, lines: list[str]) -> None:
        """Send ``lines`` to a room or an account (after the flood-control bucket allows each line)."""

    @abstractmethod
    async def close(self) -> None: ...

    def is_room(self, target: str) -> bool:
        return target in self.config.rooms


def adapter_class(protocol: str) -> type[Adapter]:
    for ep in entry_points(group=GROUP):
        if ep.name == protocol:
            return ep.load()
    raise LookupError(f"no chat adapter {protocol!r} (entry points of {GROUP})")


async def backoff(attempt: int) -> None:
    await asyncio.sleep(min(30.0, 0.5 * 2 ** min(attempt, 6)))

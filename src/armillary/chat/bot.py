"""The bot runner: adapters for the configured connections, the command handler, and two pollers.

- Results (every ``RESULT_POLL_S``): pending results of this bot's connections whose job ended are posted
  and marked (``armillary.chat.results``), so a result arrives however long its job ran, and after a restart.
- Notifications (every ``DELIVERY_POLL_S``, when ``armillary.notify`` is installed): chat deliveries are
  claimed with a lease, posted to ``target = {"connection": name, "room": room}`` and marked.

``armillary bot`` runs it in the foreground (``run_forever``); ``armillary serve`` starts it on a thread of
its own (``BotThread``) when connections are configured. Either way commands reach the app object of the
process through ``armillary.chat.apiclient`` (in-process HTTP); a standalone bot builds an app with its engine
off, so the jobs it starts are run by the server's engine (which polls the database).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

from armillary.chat import results
from armillary.chat.adapters.base import Adapter, Incoming, adapter_class
from armillary.chat.apiclient import ApiClient
from armillary.chat.commands import DEFAULT_CONFIRM_ENVIRONMENTS, Commands, Settings
from armillary.chat.connections import ConnectionConfig
from armillary.domain.db import Database

log = logging.getLogger("armillary.chat")
RESULT_POLL_S = 0.5
DELIVERY_POLL_S = 1.0


def settings_from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    confirm = env.get("ARMILLARY_CHAT_CONFIRM_ENVIRONMENTS")
    return Settings(
        public_url=env.get("ARMILLARY_PUBLIC_URL") or "http://127.0.0.1:8000",
        confirm_environments=tuple(e.strip().lower() for e in confirm.split(",") if e.strip())
        if confirm is not None else DEFAULT_CONFIRM_ENVIRONMENTS,
        commands_per_minute=float(env.get("ARMILLARY_CHAT_COMMANDS_PER_MINUTE") or 20),
        lines_per_s=float(env.get("ARMILLARY_CHAT_LINES_PER_SECOND") or 2),
        line_burst=float(env.get("ARMILLARY_CHAT_LINE_BURST") or 6),
    )


class Bot:
    def __init__(self, app: Any, db: Database, connections: Sequence[ConnectionConfig],
                 settings: Settings | None = None, *, lines_per_s: float | None = None,
                 line_burst: float | None = None) -> None:
        self.db = db
        self.api = ApiClient(app, db)
        self.commands = Commands(db, self.api, settings)
        lines_per_s = self.commands.settings.lines_per_s if lines_per_s is None else lines_per_s
        line_burst = self.commands.settings.line_burst if line_burst is None else line_burst
        self.adapters: dict[str, Adapter] = {
            c.name: adapter_class(c.protocol)(c, self._on_message, lines_per_s=lines_per_s, burst=line_burst)
            for c in connections
        }
        self.owner = f"bot@{socket.gethostname()}:{os.getpid()}:{id(self)}"
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    async def _on_message(self, msg: Incoming) -> None:
        try:
            lines = await self.commands.handle(msg)
        except Exception:  # one command's bug must not end the bot; the log has it
            log.exception("chat command %r from %s:%s failed", msg.text[:100], msg.connection, msg.account)
            lines = ["sorry, that failed inside the bot (the server log says why)"]
        if not lines:
            return
        try:
            await self.adapters[msg.connection].send(msg.room or msg.account, lines)
        except (OSError, ConnectionError) as exc:  # cut off meanwhile: the answer is lost, a result would not be
            log.warning("could not answer %s:%s: %s", msg.connection, msg.account, exc)

    async def start(self) -> None:
        for adapter in self.adapters.values():
            self._tasks.append(asyncio.create_task(adapter.run(), name=f"chat-{adapter.name}"))
        self._tasks.append(asyncio.create_task(self._post_results(), name="chat-results"))
        self._tasks.append(asyncio.create_task(self._post_deliveries(), name="chat-deliveries"))

    async def wait_ready(self, timeout_s: float = 20) -> None:
        await asyncio.wait_for(asyncio.gather(*(a.ready.wait() for a in self.adapters.values())), timeout_s)

    async def stop(self) -> None:
        self._stop.set()
        for adapter in self.adapters.values():
            await adapter.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.api.aclose()

    async def run_forever(self) -> None:
        await self.start()
        try:
            await self._stop.wait()
        finally:
            await self.stop()

    # ------------------------------------------------------------ results

    async def _post_results(self) -> None:
        while not self._stop.is_set():
            try:
                await self.post_due_results()
            except Exception:  # the database away for a moment: try again at the next poll
                log.exception("posting chat results failed; trying again")
            await asyncio.sleep(RESULT_POLL_S)

    async def post_due_results(self) -> int:
        ready = [name for name, a in self.adapters.items() if a.ready.is_set()]
        if not ready:
            return 0
        due = await asyncio.to_thread(self._due, ready)
        for result_id, connection, target, lines in due:
            await self.adapters[connection].send(target, lines)
            await asyncio.to_thread(self._mark_posted, result_id)
        return len(due)

    def _due(self, connections: list[str]) -> list[tuple[int, str, str, list[str]]]:
        with self.db.session() as session:
            return [(row.id, row.connection, row.reply_to,
                     results.final_lines(session, row, job, self.commands.settings.public_url))
                    for row, job in results.due(session, connections)]

    def _mark_posted(self, result_id: int) -> None:
        with self.db.session() as session:
            results.mark_posted(session, result_id)
            session.commit()

    # ------------------------------------------------------------ notifications (armillary.notify)

    async def _post_deliveries(self) -> None:
        try:
            from armillary.notify import deliveries
        except ImportError:  # notifications not installed: the bot works without them
            log.info("armillary.notify is not available: no chat notifications")
            return
        while not self._stop.is_set():
            try:
                await self._deliver_once(deliveries)
            except Exception:
                log.exception("posting chat notifications failed; trying again")
            await asyncio.sleep(DELIVERY_POLL_S)

    async def _deliver_once(self, deliveries: Any) -> None:
        claimed = await asyncio.to_thread(self._claim, deliveries)
        for delivery_id, target, text in claimed:
            adapter = self.adapters.get(str(target.get("connection")))
            room = target.get("room")
            if adapter is None or not room or not adapter.ready.is_set():
                error = f"no ready chat connection {target.get('connection')!r} on this bot"
                await asyncio.to_thread(self._mark, deliveries, delivery_id, error)
                continue
            try:
                await adapter.send(str(room), text.splitlines() or [""])
            except (OSError, ConnectionError) as exc:
                await asyncio.to_thread(self._mark, deliveries, delivery_id, str(exc))
                continue
            await asyncio.to_thread(self._mark, deliveries, delivery_id, None)

    def _claim(self, deliveries: Any) -> list[tuple[int, dict, str]]:
        with self.db.session() as session:
            rows = deliveries.claim_pending(session, kind="chat", limit=20, owner=self.owner, lease_s=30)
            claimed = [(row.id, dict(row.target or {}), row.text or "") for row in rows]
            session.commit()
            return claimed

    def _mark(self, deliveries: Any, delivery_id: int, error: str | None) -> None:
        with self.db.session() as session:
            if error is None:
                deliveries.mark_delivered(session, delivery_id)
            else:
                deliveries.mark_failed(session, delivery_id, error, retry=True)
            session.commit()


class BotThread:
    """The bot on a thread with its own event loop (inside ``armillary serve``, and in tests)."""

    def __init__(self, bot_factory: Any) -> None:
        self.bot_factory = bot_factory
        self.loop = asyncio.new_event_loop()
        self.bot: Bot | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, name="armillary-bot", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.bot = self.bot_factory()
        self.loop.call_soon(self.started.set)
        self.loop.run_until_complete(self.bot.run_forever())
        # Drop the adapters while the loop still runs: their clients (slixmpp's streams) schedule their own
        # clean-up when collected, which a closed loop would refuse.
        self.bot.adapters.clear()
        self.bot._tasks.clear()
        gc.collect()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def start(self, ready_timeout_s: float | None = None) -> BotThread:
        self.thread.start()
        self.started.wait(30)
        if ready_timeout_s is not None:
            self.call(lambda bot: bot.wait_ready(ready_timeout_s), timeout_s=ready_timeout_s + 5)
        return self

    def call(self, make: Any, timeout_s: float = 30) -> Any:
        """Run ``make(bot)`` (a coroutine) on the bot's loop and wait for its result."""
        assert self.bot is not None
        return asyncio.run_coroutine_threadsafe(make(self.bot), self.loop).result(timeout_s)

    def stop(self, timeout_s: float = 15) -> None:
        if self.bot is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.bot._stop.set)
        self.thread.join(timeout_s)


def start_in_server(app: Any, db: Database, box: Any) -> BotThread | None:
    """``armillary serve``: the bot on its own thread when chat connections are configured, else None."""
    from armillary.chat.connections import configured

    try:
        with db.session() as session:
            connections = configured(session, box)
    except Exception:  # e.g. the chat tables not migrated yet: the server serves, the log says why
        log.exception("could not read the chat connections; the bot does not start")
        return None
    if not connections:
        return None
    settings = settings_from_env()
    log.info("chat bot: %s", ", ".join(f"{c.name} ({c.protocol} {c.host}:{c.port})" for c in connections))
    return BotThread(lambda: Bot(app, db, connections, settings)).start()

"""What each chat command does: a few calls of the public API as the linked user, and the answer's lines.

One table (``Commands.handlers``) for every adapter. A command that starts a job writes a pending result
(``results.promise``) so its final result is posted when the job ends. Destructive commands in an
environment that wants confirmation are held until ``yes <code>`` from the same account within 60 s.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from armillary.auth import audit
from armillary.chat import grammar, identity, results
from armillary.chat.adapters.base import Incoming
from armillary.chat.apiclient import ApiClient, ApiError, UserApi
from armillary.chat.grammar import GrammarError, Parsed
from armillary.chat.paging import Pager
from armillary.chat.ratelimit import PerAccount
from armillary.domain.accounts import User
from armillary.domain.db import Database

CONFIRM_S = 60
DEFAULT_CONFIRM_ENVIRONMENTS = ("prod", "production")
NOT_LINKED = ("you are not linked to an Armillary account: run `armillary chat link` and send me "
              "`link <code>` in a private message (until then only `help` works)")


@dataclass
class Reply:
    lines: list[str]
    status: int = 200  # for the audit row: what the command came to (the API's status when it refused)
    job_id: int | None = None


@dataclass
class Held:
    """A destructive command waiting for ``yes <code>``."""

    code: str
    parsed: Parsed
    room: str | None
    until: float


@dataclass
class Settings:
    public_url: str = "http://127.0.0.1:8000"
    confirm_environments: tuple[str, ...] = DEFAULT_CONFIRM_ENVIRONMENTS
    commands_per_minute: float = 20
    command_burst: float = 5
    page_lines: int = 8
    confirm_s: float = CONFIRM_S  # how long a held destructive command waits for `yes <code>`
    lines_per_s: float = 2.0  # flood control towards the chat server: the rate of outgoing lines...
    line_burst: float = 6  # ...after a burst of this many


class Commands:
    def __init__(self, db: Database, api: ApiClient, settings: Settings | None = None) -> None:
        self.db, self.api = db, api
        self.settings = settings or Settings()
        self.pager = Pager(self.settings.page_lines)
        self.limits = PerAccount(self.settings.commands_per_minute / 60, self.settings.command_burst)
        self.held: dict[tuple[str, str], Held] = {}
        self.handlers: dict[str, Callable[[Incoming, Parsed, UserApi, User], Awaitable[Reply]]] = {
            "status": self.status, "list": self.list, "jobs": self.jobs, "job": self.job, "watch": self.watch,
            "scale": self.scale, "audit": self.audit, "attention": self.attention, "lock": self.lock,
            "unlock": self.unlock, "more": self.more, "yes": self.yes,
            **{action: self.start_job for action in grammar.JOB_ACTIONS},
        }

    # ------------------------------------------------------------ entry

    async def handle(self, msg: Incoming) -> list[str]:
        """The answer to one message (already addressed to the bot); writes the command's audit row."""
        request_id = f"chat-{uuid.uuid4().hex[:16]}"
        user: User | None = None
        verb = "?"
        try:
            parsed = grammar.parse(msg.text)
            verb = parsed.verb
            if verb == "help":
                return self._page(msg, _help(parsed.args))
            if verb == "link":
                reply = await asyncio.to_thread(self._link, msg, parsed)
                user = reply[1]
                return reply[0].lines
            user = await asyncio.to_thread(self._linked, msg)
            if user is None:
                return [NOT_LINKED]
            if not self.limits.allow(f"{msg.connection}:{msg.account}"):
                reply = Reply(["slow down: too many commands, try again in a little while"], status=429)
            else:
                api = self.api.for_user(user.id, f"{msg.connection}:{msg.account}", request_id)
                reply = await self._run(msg, parsed, api, user)
            await self._audit(msg, user, verb, reply.status, request_id)
            return self._page(msg, reply.lines) if verb != "more" else reply.lines
        except GrammarError as exc:
            return [str(exc)]

    async def _run(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        try:
            return await self.handlers[parsed.verb](msg, parsed, api, user)
        except GrammarError as exc:
            return Reply([str(exc)], status=400)
        except ApiError as exc:
            return Reply([f"refused: {exc.detail}"], status=exc.status)

    def _page(self, msg: Incoming, lines: list[str]) -> list[str]:
        return self.pager.first(self._key(msg), lines)

    @staticmethod
    def _key(msg: Incoming) -> tuple[str, str, str]:
        return (msg.connection, msg.account, msg.room or "")

    def _linked(self, msg: Incoming) -> User | None:
        with self.db.session() as session:
            user = identity.linked_user(session, msg.connection, msg.account)
            if user is not None:
                session.expunge(user)
            return user

    def _link(self, msg: Incoming, parsed: Parsed) -> tuple[Reply, User | None]:
        if msg.room is not None:
            return Reply([("send `link <code>` to me in a private message, never in a room (and make a new code: "
                          "this one was seen)")], status=400), None
        if len(parsed.args) != 1:
            return Reply([grammar.usage("link")], status=400), None
        with self.db.session() as session:
            user = identity.redeem(session, parsed.args[0], msg.connection, msg.account)
            if user is None:
                session.rollback()
                reply = Reply(["that code is unknown, used or expired: make a new one with `armillary chat link`"],
                              status=403)
            else:
                session.commit()
                session.expunge(user)
                reply = Reply([f"linked: {msg.account} acts as {user.name} from now on"])
        audit.record(self.db, user_id=user.id if user else None, username=user.name if user else None,
                     method="CHAT", path=f"chat://{msg.connection}/private", action="chat.link",
                     resource_type="chat_accounts", resource_id=f"{msg.connection}:{msg.account}"[:255],
                     status=reply.status, request_id=None,
                     detail={"chat_account": f"{msg.connection}:{msg.account}"})
        return reply, user

    async def _audit(self, msg: Incoming, user: User, verb: str, status: int, request_id: str) -> None:
        """The command's own audit row (the API calls it made are rows too, with the same request id)."""
        where = msg.room or "private"
        text = msg.text if verb != "yes" else "yes ****"
        await asyncio.to_thread(partial(
            audit.record, self.db, user_id=user.id, username=user.name, method="CHAT",
            path=f"chat://{msg.connection}/{where}"[:1000], action=f"chat.{verb}", resource_type="chat",
            resource_id=f"{msg.connection}:{msg.account}"[:255], status=status, request_id=request_id,
            detail={"chat_account": f"{msg.connection}:{msg.account}", "room": msg.room, "command": text[:500]}))

    # ------------------------------------------------------------ reading

    async def status(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        if parsed.options:
            return await self._selection_status(api, parsed)
        if len(parsed.args) != 1:
            raise GrammarError(grammar.usage("status"))
        name = parsed.args[0]
        system = await _system_named(api, name)
        if system is not None:
            return Reply([_system_line(system)])
        try:
            cluster = await api.get(f"/clusters/{name}")
        except ApiError as exc:
            if exc.status != 404:
                raise
            return Reply([f"no system or cluster {name!r} that you can see"], status=404)
        return Reply([f"cluster {cluster['name']}: {cluster['status']} — {cluster['active_members']}/"
                      f"{cluster['desired']} active (min {cluster['min']}, max {cluster['max']})"
                      + (f" — {cluster['status_reason']}" if cluster.get("status_reason") else "")])

    async def _selection_status(self, api: UserApi, parsed: Parsed) -> Reply:
        systems = await _systems(api, grammar.list_filters(parsed))
        if not systems:
            return Reply(["no systems match"])
        states: dict[str, int] = {}
        for system in systems:
            states[system["state"]] = states.get(system["state"], 0) + 1
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        return Reply([f"{len(systems)} systems: {counts}", *(_system_line(s) for s in systems)])

    async def list(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        query = grammar.list_filters(parsed)
        if parsed.args:
            query["q"] = parsed.args[0]
        systems = await _systems(api, query)
        return Reply([_system_line(s) for s in systems] or ["no systems match"])

    async def jobs(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        which = parsed.args[0].lower() if parsed.args else ""
        if which not in {"", "mine", "running"}:
            raise GrammarError(grammar.usage("jobs"))
        page = await api.get("/jobs", limit=50 if which == "mine" else 15,
                             status="running" if which == "running" else None)
        items = [j for j in page["items"] if which != "mine" or j.get("actor") == user.name][:15]
        return Reply([f"#{j['id']} {j['action']} {j['status']} by {j.get('actor') or '-'}" for j in items]
                     or ["no jobs"])

    async def job(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        job = await api.get(f"/jobs/{_job_id(parsed, 'job')}")
        hostname = await _hostname(api, job.get("system_id"))
        lines = [results.job_line(job, hostname, self.settings.public_url)]
        for step in job.get("steps", []):
            mark = {"succeeded": "✔", "failed": "✗", "running": "…", "cancelled": "✗"}.get(step["status"], "·")
            error = f" — {step['error'][:200]}" if step.get("error") else ""
            lines.append(f"  {mark} {step['name']} ({step['status']}, attempt {step['attempts']}){error}")
        return Reply(lines)

    async def attention(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        page = await api.get("/attention", limit=50)
        items = page["items"] if isinstance(page, dict) else page
        return Reply([f"#{i['id']} {i['system']['name']}: {i['reason']} ({i['status']})" for i in items]
                     or ["nothing needs attention"])

    async def more(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        return Reply(self.pager.more(self._key(msg)))

    # ------------------------------------------------------------ jobs

    async def start_job(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User,
                        confirmed: bool = False) -> Reply:
        selector, params = grammar.selector_of(parsed)
        if parsed.verb in grammar.DESTRUCTIVE and not confirmed:
            envs = await self._environments_of(api, selector)
            held = await self._hold_if_needed(msg, parsed, api, envs)
            if held is not None:
                return held
        job = await api.post("/jobs", {"action": parsed.verb, "selector": selector, "params": params})
        return await self._promised(msg, job["id"], f"job #{job['id']} {parsed.verb} started", job)

    async def watch(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        job = await api.get(f"/jobs/{_job_id(parsed, 'watch')}")  # only a job the user may see
        return await self._promised(msg, job["id"], f"watching job #{job['id']} ({job['status']})", job)

    async def scale(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        if len(parsed.args) != 2 or not parsed.args[1].isdigit():
            raise GrammarError(grammar.usage("scale"))
        body = await api.post(f"/clusters/{parsed.args[0]}/resize", {"number": int(parsed.args[1])})
        job_id = _job_id_in(body)
        if job_id is None:
            return Reply([f"cluster {parsed.args[0]}: resize accepted"])
        return await self._promised(msg, job_id, f"job #{job_id} scale {parsed.args[0]} to {parsed.args[1]} started")

    async def audit(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        if len(parsed.args) != 2 or parsed.args[0].lower() != "run":
            raise GrammarError(grammar.usage("audit"))
        body = await api.post(f"/audits/{parsed.args[1]}/runs", {})
        job_id = _job_id_in(body)
        if job_id is None:
            return Reply([f"audit {parsed.args[1]}: run started"])
        return await self._promised(msg, job_id, f"job #{job_id} audit {parsed.args[1]} started")

    async def _promised(self, msg: Incoming, job_id: int, started: str, job: dict | None = None) -> Reply:
        """Write the pending result, then say the job started (with its link)."""
        await asyncio.to_thread(self._promise, msg, job_id, started)
        return Reply([(f"{started} — I'll post the result here when it ends: "
                      f"{self.settings.public_url.rstrip('/')}/jobs/{job_id}")], status=202, job_id=job_id)

    def _promise(self, msg: Incoming, job_id: int, started: str) -> None:
        with self.db.session() as session:
            results.promise(session, job_id, msg.connection, msg.room or msg.account, msg.account, said=started)
            session.commit()

    # ------------------------------------------------------------ locks and confirmation

    async def lock(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User, confirmed: bool = False) -> Reply:
        if len(parsed.args) < 2:
            raise GrammarError(grammar.usage("lock"))
        env = parsed.args[0]
        if not confirmed:
            held = await self._hold_if_needed(msg, parsed, api, {env})
            if held is not None:
                return held
        body = await api.post(f"/environments/{env}/lock", {"reason": " ".join(parsed.args[1:])[:1000]})
        return Reply([f"environment {body['name']} locked: {body['lock_reason']}"])

    async def unlock(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        if not parsed.args:
            raise GrammarError(grammar.usage("unlock"))
        body = await api.post(f"/environments/{parsed.args[0]}/unlock", {})
        return Reply([f"environment {body['name']} unlocked"])

    async def _environments_of(self, api: UserApi, selector: dict[str, Any]) -> set[str]:
        if "environment" in selector:
            return {str(selector["environment"])}
        query: dict[str, Any] = {k: selector[k] for k in ("type", "state") if k in selector}
        if selector.get("labels"):
            query["label"] = [f"{k}={v}" for k, v in selector["labels"].items()]
        envs: set[str] = set()
        for name in selector.get("systems") or []:
            system = await _system_named(api, str(name))
            if system is not None:
                envs.add(system["environment"]["name"])
        if query:
            envs |= {s["environment"]["name"] for s in await _systems(api, query)}
        return envs

    async def _hold_if_needed(self, msg: Incoming, parsed: Parsed, api: UserApi, envs: set[str]) -> Reply | None:
        confirm = sorted([e for e in envs if await self._wants_confirmation(api, e)])
        if not confirm:
            return None
        code = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(4))
        until = time.monotonic() + self.settings.confirm_s
        self.held[(msg.connection, msg.account)] = Held(code, parsed, msg.room, until)
        return Reply([(f"⚠ {parsed.verb} in {', '.join(confirm)} needs confirmation: reply `yes {code}` within "
                      f"{self.settings.confirm_s:g} s (nothing happens otherwise)")], status=202)

    async def _wants_confirmation(self, api: UserApi, env: str) -> bool:
        """Prod by default (the names in ``confirm_environments``), and every environment flagged
        ``requires_approval`` (the flag remediation runs already wait on)."""
        try:
            body = await api.get(f"/environments/{env}")
        except ApiError:
            return env.lower() in self.settings.confirm_environments  # the API answers the real call
        return bool(body.get("requires_approval")) or body["name"].lower() in self.settings.confirm_environments

    async def yes(self, msg: Incoming, parsed: Parsed, api: UserApi, user: User) -> Reply:
        held = self.held.get((msg.connection, msg.account))
        if held is None or held.until < time.monotonic():
            self.held.pop((msg.connection, msg.account), None)
            return Reply(["nothing to confirm (or it expired: ask again)"], status=409)
        if len(parsed.args) != 1 or parsed.args[0].upper() != held.code:
            return Reply(["that is not the confirmation code"], status=403)
        del self.held[(msg.connection, msg.account)]
        if held.parsed.verb == "lock":
            return await self.lock(msg, held.parsed, api, user, confirmed=True)
        origin = Incoming(msg.connection, msg.account, held.room, msg.text)  # the result goes where it was asked
        return await self.start_job(origin, held.parsed, api, user, confirmed=True)


# ---------------------------------------------------------------- helpers


def _help(args: list[str]) -> list[str]:
    if args:
        verb = args[0].lower()
        if verb not in grammar.COMMANDS:
            return [f"no command {args[0]!r}"]
        return [grammar.usage(verb)]
    return ["commands: " + ", ".join(grammar.COMMANDS), ("say `help <command>` for one; selectors: k=v labels, "
            "env=<name>, type=<name>, state=<state>, hostnames")]


def _job_id(parsed: Parsed, verb: str) -> int:
    if len(parsed.args) != 1 or not parsed.args[0].lstrip("#").isdigit():
        raise GrammarError(grammar.usage(verb))
    return int(parsed.args[0].lstrip("#"))


def _job_id_in(body: Any) -> int | None:
    if not isinstance(body, dict):
        return None
    if isinstance(body.get("job_id"), int):
        return body["job_id"]
    job = body.get("job")
    if isinstance(job, dict) and isinstance(job.get("id"), int):
        return job["id"]
    if "steps" in body and isinstance(body.get("id"), int):
        return body["id"]
    return None


async def _systems(api: UserApi, query: dict[str, Any]) -> list[dict[str, Any]]:
    page = await api.get("/systems", limit=200, **query)
    return list(page["items"])


async def _system_named(api: UserApi, hostname: str) -> dict[str, Any] | None:
    for system in await _systems(api, {"q": hostname}):
        if system["hostname"] == hostname:
            return system
    return None


async def _hostname(api: UserApi, system_id: int | None) -> str | None:
    if system_id is None:
        return None
    try:
        return (await api.get(f"/systems/{system_id}"))["hostname"]
    except ApiError:
        return None


def _system_line(system: dict[str, Any]) -> str:
    labels = ",".join(f"{k}={v}" for k, v in sorted(system.get("labels", {}).items()))
    parts = [f"{system['hostname']}: {system['state']}", f"env {system['environment']['name']}"]
    if system.get("type"):
        parts.append(f"type {system['type']['name']}")
    if system.get("hypervisor"):
        parts.append(f"on {system['hypervisor']['name']}")
    if labels:
        parts.append(labels)
    return " · ".join(parts)

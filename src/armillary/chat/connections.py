"""Connection settings: from the database (``/api/v1/chat/connections``) and from environment variables.

``ARMILLARY_CHAT_IRC``: ``irc://nick[:password]@host[:port]/#chan,#chan2`` (``ircs://`` for TLS; query
``sasl=1`` for SASL PLAIN with nick + password, ``nickserv=<password>`` to identify to NickServ,
``name=<connection name>``, default ``irc``). ``ARMILLARY_CHAT_XMPP``:
``xmpp://jid:password@host[:port]/room@conference.host,room2@...`` (query ``tls=0`` for plain, ``name=``,
default ``xmpp``). Several connections of one kind: separate the URLs with spaces.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary.chat.models import ChatConnection
from armillary.domain.secrets import SecretBox

DEFAULT_PORTS = {("irc", False): 6667, ("irc", True): 6697, ("xmpp", False): 5222, ("xmpp", True): 5222}


@dataclass
class ConnectionConfig:
    name: str
    protocol: str
    host: str
    port: int
    nick: str
    tls: bool = False
    sasl: bool = False
    rooms: list[str] = field(default_factory=list)
    password: str | None = field(default=None, repr=False)
    nickserv_password: str | None = field(default=None, repr=False)
    verify_tls: bool = True


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def parse_url(url: str, protocol: str) -> ConnectionConfig:
    """One ``ARMILLARY_CHAT_*`` URL (ValueError naming what is wrong)."""
    parts = urlsplit(url)
    fragment, _, late_query = parts.fragment.partition("?")  # irc://bot@host/#ops?sasl=1: "#" starts a fragment
    if late_query:
        parts = parts._replace(fragment=fragment, query="&".join(q for q in (parts.query, late_query) if q))
    scheme = parts.scheme.lower()
    if protocol == "irc" and scheme not in {"irc", "ircs"}:
        raise ValueError(f"ARMILLARY_CHAT_IRC: {scheme!r} is not irc:// or ircs://")
    if protocol == "xmpp" and scheme not in {"xmpp", "xmpps"}:
        raise ValueError(f"ARMILLARY_CHAT_XMPP: {scheme!r} is not xmpp://")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if not parts.hostname or not parts.username:
        raise ValueError(f"ARMILLARY_CHAT_{protocol.upper()}: needs user@host")
    tls = scheme.endswith("s") if protocol == "irc" else _truthy(query.get("tls", "1"))
    if protocol == "irc":
        rooms = [unquote(r) for r in (parts.fragment and [f"#{parts.fragment}"] or [])]
        rooms = [r if r.startswith(("#", "&")) else f"#{r}" for r in
                 ",".join([parts.path.lstrip("/"), *rooms]).split(",") if r.strip("#&")]
    else:
        rooms = [unquote(r) for r in parts.path.lstrip("/").split(",") if r]
    return ConnectionConfig(
        name=query.get("name", protocol), protocol=protocol, host=parts.hostname,
        port=parts.port or DEFAULT_PORTS[(protocol, tls)], nick=unquote(parts.username), tls=tls,
        sasl=_truthy(query.get("sasl", "0")), rooms=rooms,
        password=unquote(parts.password) if parts.password else None,
        nickserv_password=query.get("nickserv"), verify_tls=_truthy(query.get("verify", "1")),
    )


def from_env(env: dict[str, str] | None = None) -> list[ConnectionConfig]:
    env = dict(os.environ if env is None else env)
    found = []
    for protocol in ("irc", "xmpp"):
        for url in (env.get(f"ARMILLARY_CHAT_{protocol.upper()}") or "").split():
            found.append(parse_url(url, protocol))
    return found


def from_db(session: Session, box: SecretBox) -> list[ConnectionConfig]:
    rows = session.scalars(select(ChatConnection).where(ChatConnection.enabled.is_(True))
                           .order_by(ChatConnection.id)).all()
    found = []
    for row in rows:
        secret = box.decrypt(row.secrets) if row.secrets else {}
        found.append(ConnectionConfig(
            name=row.name, protocol=row.protocol, host=row.host, port=row.port, nick=row.nick, tls=row.tls,
            sasl=row.sasl, rooms=list(row.rooms or []), password=secret.get("password"),
            nickserv_password=secret.get("nickserv_password"),
        ))
    return found


def configured(session: Session, box: SecretBox, env: dict[str, str] | None = None) -> list[ConnectionConfig]:
    """Every connection the bot should hold: the environment's, then the database's (a name once)."""
    found = {c.name: c for c in from_env(env)}
    for conn in from_db(session, box):
        found.setdefault(conn.name, conn)
    return list(found.values())

"""The chat tables: connections to chat networks, linked accounts, one-time link codes, pending results.

A pending result is a row, not a task in memory: a job started from chat is written here with where its
final result goes, and the bot posts it when the job ends, so a bot restarted mid-job finds it again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from armillary.domain.models import Base, JSONType, Timestamped, UTCDateTime, utcnow


class ChatConnection(Timestamped, Base):
    """One bot identity on one chat network (an IRC server or an XMPP server) and the rooms it joins."""

    __tablename__ = "chat_connections"
    __mapper_args__ = {"version_id_col": Timestamped.version}  # noqa: RUF012

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    protocol: Mapped[str] = mapped_column(String(15))  # an armillary.chat_adapters entry point: irc, xmpp
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    tls: Mapped[bool] = mapped_column(Boolean, default=False)
    nick: Mapped[str] = mapped_column(String(255))  # IRC nick, or the bot's XMPP JID
    sasl: Mapped[bool] = mapped_column(Boolean, default=False)  # IRC: SASL PLAIN with nick + password
    rooms: Mapped[list[str]] = mapped_column(JSONType, default=list)  # IRC channels, XMPP MUC room JIDs
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Fernet token (armillary.domain.secrets) of {"password": ..., "nickserv_password": ...}; never returned.
    secrets: Mapped[str | None] = mapped_column(Text, nullable=True, info={"audit": "secret"})


class ChatAccount(Base):
    """A chat account (a nick on one connection, or a bare JID) acting as one Armillary user."""

    __tablename__ = "chat_accounts"
    __table_args__ = (UniqueConstraint("connection", "account"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection: Mapped[str] = mapped_column(String(63))
    account: Mapped[str] = mapped_column(String(255))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ChatLinkCode(Base):
    """A one-time code that links the chat account sending it to ``user_id``; only its SHA-256 is kept."""

    __tablename__ = "chat_link_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    used_by: Mapped[str | None] = mapped_column(String(255), nullable=True)


class PendingResult(Base):
    """A job whose final result the bot still owes to a room or a person (``posted_at`` None)."""

    __tablename__ = "chat_pending_results"
    __table_args__ = (Index("ix_chat_pending_results_posted_at", "posted_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    connection: Mapped[str] = mapped_column(String(63))
    reply_to: Mapped[str] = mapped_column(String(255))  # a room, or the account for a private message
    account: Mapped[str] = mapped_column(String(255))  # who asked (addressed in a room)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)

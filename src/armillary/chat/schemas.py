"""Bodies and answers of ``/api/v1/chat``: connections (passwords write-only), link codes, linked accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, StrictBool, StringConstraints

from armillary.domain.schemas import Input, Name, Output, json_int

Text255 = Annotated[str, StringConstraints(min_length=1, max_length=255, pattern=r"^[^\s\x00-\x1f\x7f]+$")]
Host = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\-\[\]]+$")]
Secret = Annotated[str, StringConstraints(max_length=1000)]


class ConnectionCreate(Input):
    name: Name
    protocol: Name = Field(..., description="An armillary.chat_adapters entry point: irc, xmpp")
    host: Host
    port: json_int(ge=1, le=65535)
    tls: StrictBool = False
    nick: Text255 = Field(..., description="IRC nick, or the bot's XMPP JID")
    sasl: StrictBool = Field(False, description="IRC: authenticate with SASL PLAIN (nick + password)")
    rooms: list[Text255] = Field(default_factory=list, max_length=100,
                                 description="IRC channels, or XMPP multi-user chat room JIDs")
    enabled: StrictBool = True
    password: Secret | None = Field(None, description="Write-only: server/SASL/XMPP password")
    nickserv_password: Secret | None = Field(None, description="Write-only: IRC NickServ IDENTIFY password")


class ConnectionUpdate(Input):
    host: Host | None = None
    port: json_int(ge=1, le=65535) | None = None
    tls: StrictBool | None = None
    nick: Text255 | None = None
    sasl: StrictBool | None = None
    rooms: list[Text255] | None = Field(None, max_length=100)
    enabled: StrictBool | None = None
    password: Secret | None = Field(None, description="Write-only; an empty string removes it")
    nickserv_password: Secret | None = Field(None, description="Write-only; an empty string removes it")


class ConnectionOut(Output):
    id: int
    name: str
    protocol: str
    host: str
    port: int
    tls: bool
    nick: str
    sasl: bool
    rooms: list[str]
    enabled: bool
    secrets_set: list[str] = Field(description="Which write-only secrets are held (never their values)")
    created_at: datetime
    updated_at: datetime
    version: int


class LinkCodeOut(Output):
    code: str = Field(description="Send `link <code>` to the bot in a private message; works once")
    expires_at: datetime


class ChatAccountOut(Output):
    id: int
    connection: str
    account: str
    user: str
    linked_at: datetime

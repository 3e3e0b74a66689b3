"""How the bot acts for a linked user: the public REST API, in-process, with that user's short-lived token.

Decision (issue 18): a chat command is turned into the very requests a CLI or the web UI would make, sent to
the app object in this process (``httpx.ASGITransport``, no socket). So every check the API makes — role,
environment, quota, lock, validation, idempotency — applies unchanged, and every request is an audit row of
the user, carrying the chat command's request id (``X-Request-ID: chat-…``) that the bot's own audit row
of the command carries too. The token is a login-kind token of the linked user (``chat <connection>:<account>``),
valid ``TOKEN_TTL``, minted here because the bot is part of the server and shares its database; revoking the
user's tokens or deactivating the user takes effect on the next command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx

from armillary.auth import tokens
from armillary.domain.accounts import TokenKind, User
from armillary.domain.db import Database

TOKEN_TTL = timedelta(minutes=15)
RENEW_BEFORE_S = 120


class ApiError(Exception):
    """A refused or failed API call: its status and the problem's detail (what the chat user is told)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Token:
    plaintext: str
    until: float


class ApiClient:
    """The app's API as the linked users: ``for_user(user)`` gives a ``UserApi``."""

    def __init__(self, app: Any, db: Database) -> None:
        self.db = db
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://armillary/api/v1",
                                      timeout=60)
        self._tokens: dict[tuple[int, str], _Token] = {}

    def _token(self, user_id: int, label: str) -> str:
        key = (user_id, label)
        held = self._tokens.get(key)
        if held is not None and held.until - time.monotonic() > RENEW_BEFORE_S:
            return held.plaintext
        with self.db.session() as session:
            user = session.get(User, user_id)
            if user is None:
                raise ApiError(401, "the linked account no longer exists")
            _, plaintext = tokens.issue(session, user, TokenKind.LOGIN, f"chat {label}"[:63], TOKEN_TTL)
            session.commit()
        self._tokens[key] = _Token(plaintext, time.monotonic() + TOKEN_TTL.total_seconds())
        return plaintext

    def for_user(self, user_id: int, label: str, request_id: str) -> UserApi:
        return UserApi(self, user_id, label, request_id)

    async def aclose(self) -> None:
        await self.http.aclose()


class UserApi:
    """Calls of one chat command, as one user, under one request id."""

    def __init__(self, client: ApiClient, user_id: int, label: str, request_id: str) -> None:
        self.client, self.user_id, self.label, self.request_id = client, user_id, label, request_id

    async def call(self, method: str, path: str, *, params: Any = None, json: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.client._token(self.user_id, self.label)}",
                   "X-Request-ID": self.request_id}
        if method == "POST":
            headers["Idempotency-Key"] = f"{self.request_id}:{path}"[:255]
        response = await self.client.http.request(method, path, params=params, json=json, headers=headers)
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response))
        return response.json() if response.content else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v is not None})

    async def post(self, path: str, body: Any = None) -> Any:
        return await self.call("POST", path, json=body if body is not None else {})


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}"
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("title") or f"HTTP {response.status_code}"
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            first = errors[0]
            if isinstance(first, dict):
                detail = f"{detail}: {first.get('field') or first.get('loc') or ''} {first.get('detail') or first.get('msg') or ''}".strip()
        return str(detail)
    return f"HTTP {response.status_code}"

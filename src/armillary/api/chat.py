"""/api/v1/chat: the bot's connections (admins; passwords write-only), link codes and linked accounts.

``POST /chat/link-codes`` gives the caller a one-time code to send to the bot privately (``link <code>``),
after which that chat account acts as the caller (``armillary.chat.identity``). Connections changed here
are read by the bot when it starts (``armillary bot`` / ``armillary serve``); restart it to apply them.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from armillary import redaction
from armillary.api.audit_trail import note
from armillary.api.deps import (
    IdPath,
    PageParams,
    SessionDep,
    check_if_match,
    created,
    ensure_unique_name,
    get_by_ref,
    paginate,
    set_etag,
)
from armillary.api.security import Access, requires
from armillary.auth.policy import Permission
from armillary.chat import identity
from armillary.chat.adapters.base import adapter_class
from armillary.chat.models import ChatAccount, ChatConnection
from armillary.chat.schemas import (
    ChatAccountOut,
    ConnectionCreate,
    ConnectionOut,
    ConnectionUpdate,
    LinkCodeOut,
)
from armillary.domain.accounts import User
from armillary.domain.errors import Forbidden, NotFound, UnknownReference
from armillary.domain.schemas import Page
from armillary.domain.secrets import SecretBox

router = APIRouter(prefix="/chat", tags=["chat"])
SECRET_FIELDS = ("password", "nickserv_password")


def to_out(row: ChatConnection, box: SecretBox) -> ConnectionOut:
    held = box.decrypt(row.secrets) if row.secrets else {}
    return ConnectionOut(
        id=row.id, name=row.name, protocol=row.protocol, host=row.host, port=row.port, tls=row.tls, nick=row.nick,
        sasl=row.sasl, rooms=list(row.rooms or []), enabled=row.enabled,
        secrets_set=sorted(k for k, v in held.items() if v), created_at=row.created_at,
        updated_at=row.updated_at, version=row.version,
    )


def _store_secrets(row: ChatConnection, box: SecretBox, changes: dict[str, str | None]) -> None:
    """Merge the given write-only fields into the encrypted blob (``""`` removes one, None keeps it)."""
    held = box.decrypt(row.secrets) if row.secrets else {}
    for key in SECRET_FIELDS:
        value = changes.get(key)
        if value is None:
            continue
        if value == "":
            held.pop(key, None)
        else:
            redaction.register(value)
            held[key] = value
    row.secrets = box.encrypt(held) if held else None


def _check_protocol(protocol: str) -> None:
    try:
        adapter_class(protocol)
    except LookupError:
        raise UnknownReference("protocol", f"no chat adapter {protocol!r} (installed: irc, xmpp, and any "
                                           "armillary.chat_adapters entry point)") from None


@router.post("/connections", status_code=201, response_model=ConnectionOut)
def create_connection(body: ConnectionCreate, request: Request, response: Response, session: Session = SessionDep,
                      access: Access = requires(Permission.ADMIN)) -> ConnectionOut:
    """A connection of the bot to a chat network. Passwords are stored encrypted and never returned."""
    _check_protocol(body.protocol)
    ensure_unique_name(session, ChatConnection, body.name, "chat connection")
    row = ChatConnection(name=body.name, protocol=body.protocol, host=body.host, port=body.port, tls=body.tls,
                         nick=body.nick, sasl=body.sasl, rooms=list(body.rooms), enabled=body.enabled)
    box: SecretBox = request.app.state.secret_box
    _store_secrets(row, box, {"password": body.password, "nickserv_password": body.nickserv_password})
    session.add(row)
    session.flush()
    created(response, request, row.id, row.version)
    return to_out(row, box)


@router.get("/connections", response_model=Page[ConnectionOut])
def list_connections(request: Request, response: Response, page: PageParams = Depends(),
                     session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> dict:
    items, next_url = paginate(session, select(ChatConnection), ChatConnection, page, request, response)
    return {"items": [to_out(r, request.app.state.secret_box) for r in items], "next": next_url}


@router.get("/connections/{ref}", response_model=ConnectionOut)
def read_connection(ref: str, request: Request, response: Response, session: Session = SessionDep,
                    access: Access = requires(Permission.ADMIN)) -> ConnectionOut:
    row = get_by_ref(session, ChatConnection, ref, "chat connection")
    set_etag(response, row.version)
    return to_out(row, request.app.state.secret_box)


@router.patch("/connections/{ref}", response_model=ConnectionOut)
def update_connection(ref: str, body: ConnectionUpdate, request: Request, response: Response,
                      session: Session = SessionDep, access: Access = requires(Permission.ADMIN)) -> ConnectionOut:
    row = get_by_ref(session, ChatConnection, ref, "chat connection")
    check_if_match(request, row.version)
    changes = body.model_dump(exclude_unset=True)
    for field in ("host", "port", "tls", "nick", "sasl", "rooms", "enabled"):
        if changes.get(field) is not None:
            setattr(row, field, changes[field])
    box: SecretBox = request.app.state.secret_box
    _store_secrets(row, box, {k: changes.get(k) for k in SECRET_FIELDS})
    session.flush()
    set_etag(response, row.version)
    return to_out(row, box)


@router.delete("/connections/{ref}", status_code=204)
def delete_connection(ref: str, request: Request, session: Session = SessionDep,
                      access: Access = requires(Permission.ADMIN)) -> Response:
    row = get_by_ref(session, ChatConnection, ref, "chat connection")
    check_if_match(request, row.version)
    session.delete(row)
    return Response(status_code=204)


@router.post("/link-codes", status_code=201, response_model=LinkCodeOut)
def create_link_code(request: Request, session: Session = SessionDep,
                     access: Access = requires(Permission.AUTHENTICATED)) -> LinkCodeOut:
    """A one-time code (valid 10 minutes) that links the chat account sending it to the bot, privately,
    to the caller: that account then acts as the caller, with the caller's roles."""
    code, expires = identity.new_code(session, access.principal.user_id)
    redaction.register(code)
    note(request, action="chat.link_code")
    return LinkCodeOut(code=code, expires_at=expires)


@router.get("/accounts", response_model=list[ChatAccountOut])
def list_accounts(session: Session = SessionDep, access: Access = requires(Permission.AUTHENTICATED)
                  ) -> list[ChatAccountOut]:
    """The chat accounts linked to the caller (admins: to everyone)."""
    query = select(ChatAccount, User.name).join(User, User.id == ChatAccount.user_id).order_by(ChatAccount.id)
    if not access.is_admin:
        query = query.where(ChatAccount.user_id == access.principal.user_id)
    return [ChatAccountOut(id=a.id, connection=a.connection, account=a.account, user=name, linked_at=a.linked_at)
            for a, name in session.execute(query).all()]


@router.delete("/accounts/{account_id}", status_code=204)
def unlink_account(account_id: IdPath, session: Session = SessionDep,
                   access: Access = requires(Permission.OWNER)) -> Response:
    """Unlink a chat account (its own user, or an admin): it may only run `help` again."""
    row = session.get(ChatAccount, account_id)
    if row is None:
        raise NotFound(f"no chat account {account_id}")
    if not access.is_admin and row.user_id != access.principal.user_id:
        raise Forbidden("only the user a chat account is linked to, or an admin, may unlink it")
    session.delete(row)
    return Response(status_code=204)

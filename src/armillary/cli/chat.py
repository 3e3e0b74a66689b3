"""``armillary chat``: link a chat account (``chat link``), the bot's connections (``chat connections``),
and ``armillary bot``, the bot in the foreground (docs/chat.md).

``chat link`` and ``chat connections`` are API clients (/api/v1/chat); ``bot`` is a server command: it reads
the connections (ARMILLARY_CHAT_IRC / ARMILLARY_CHAT_XMPP and the database) and serves commands through an
in-process app whose engine is off — the jobs it starts run in ``armillary serve``'s engine.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from armillary.cli.client import ref_path
from armillary.cli.common import OutputOpt, client, command, delete_command, fmt, list_command, show_command
from armillary.cli.output import Column, OutputFormat, dump, field, note

chat_app = typer.Typer(help="Chat: link your chat account to the bot, and the bot's connections.",
                       no_args_is_help=True)
connections_app = typer.Typer(help="The bot's connections to IRC and XMPP servers (admins).", no_args_is_help=True)
CONNECTION_COLUMNS: list[Column] = [
    ("ID", field("id")), ("NAME", field("name")), ("PROTOCOL", field("protocol")),
    ("SERVER", lambda c: f"{c['host']}:{c['port']}{' (tls)' if c.get('tls') else ''}"),
    ("NICK", field("nick")), ("ROOMS", lambda c: ",".join(c.get("rooms") or [])), ("ENABLED", field("enabled")),
]


@command(chat_app, "link")
def chat_link(output: OutputOpt = None) -> None:
    """Print a one-time code; send `link <code>` to the bot in a private message to act as you in chat."""
    body = client().post_json("/chat/link-codes", {})
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(body, shape)
        return
    typer.echo(f"Send this to the bot in a private message (works once, until {body['expires_at']}):\n\n"
               f"    link {body['code']}\n")


@command(chat_app, "accounts")
def chat_accounts(output: OutputOpt = None) -> None:
    """The chat accounts linked to you (admins: to everyone)."""
    items = client().get_json("/chat/accounts")
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(items, shape)
        return
    for item in items:
        typer.echo(f"{item['id']}\t{item['connection']}:{item['account']}\t{item['user']}\t{item['linked_at']}")
    if not items:
        note("No linked chat accounts.", shape)


@command(chat_app, "unlink")
def chat_unlink(account_id: Annotated[int, typer.Argument(help="Id from `armillary chat accounts`")],
                output: OutputOpt = None) -> None:
    """Unlink a chat account: it may only run `help` again."""
    client().delete(f"/chat/accounts/{account_id}")
    note(f"Unlinked chat account {account_id}.", fmt(output))


@command(connections_app, "create")
def connection_create(
    name: Annotated[str, typer.Argument(help="Connection name (also the `connection` of chat notifications)")],
    protocol: Annotated[str, typer.Option("--protocol", help="irc or xmpp")],
    host: Annotated[str, typer.Option("--host")],
    port: Annotated[int, typer.Option("--port")],
    nick: Annotated[str, typer.Option("--nick", help="IRC nick, or the bot's JID")],
    room: Annotated[list[str] | None, typer.Option("--room", help="Channel or MUC room; repeat")] = None,
    tls: Annotated[bool, typer.Option("--tls/--no-tls")] = False,
    sasl: Annotated[bool, typer.Option("--sasl/--no-sasl", help="IRC SASL PLAIN")] = False,
    password: Annotated[bool, typer.Option("--password", help="Ask for the password (not echoed)")] = False,
    nickserv_password: Annotated[bool, typer.Option("--nickserv-password", help="Ask for it (not echoed)")] = False,
    output: OutputOpt = None,
) -> None:
    """Add a connection; restart the bot (or the server) to use it."""
    body: dict[str, Any] = {"name": name, "protocol": protocol, "host": host, "port": port, "nick": nick,
                            "rooms": room or [], "tls": tls, "sasl": sasl}
    if password:
        body["password"] = typer.prompt("Password", hide_input=True)
    if nickserv_password:
        body["nickserv_password"] = typer.prompt("NickServ password", hide_input=True)
    made = client().post_json("/chat/connections", body)
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(made, shape)
        return
    note(f"Created chat connection {made['name']} ({made['protocol']} {made['host']}:{made['port']}).", shape)


@command(connections_app, "update")
def connection_update(
    ref: Annotated[str, typer.Argument(help="Name or id")],
    enabled: Annotated[bool | None, typer.Option("--enabled/--disabled")] = None,
    room: Annotated[list[str] | None, typer.Option("--room", help="Replace the rooms; repeat")] = None,
    password: Annotated[bool, typer.Option("--password", help="Ask for a new password")] = False,
    output: OutputOpt = None,
) -> None:
    """Change a connection (rooms, enabled, password)."""
    body: dict[str, Any] = {}
    if enabled is not None:
        body["enabled"] = enabled
    if room is not None:
        body["rooms"] = room
    if password:
        body["password"] = typer.prompt("Password", hide_input=True)
    changed = client().patch_json(f"/chat/connections/{ref_path(ref)}", body)
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(changed, shape)
        return
    note(f"Updated chat connection {changed['name']}.", shape)


list_command(connections_app, "/chat/connections", CONNECTION_COLUMNS, "chat connections", "List the connections.")
show_command(connections_app, "/chat/connections", "Show one connection (passwords never shown).")
delete_command(connections_app, "/chat/connections", "chat connection", "Delete a connection.")


def bot() -> None:
    """Run the chat bot in the foreground (connections: ARMILLARY_CHAT_IRC/XMPP and `armillary chat connections`)."""
    import asyncio
    from dataclasses import replace

    from armillary import logs
    from armillary.api.app import create_app
    from armillary.chat.bot import Bot, settings_from_env
    from armillary.chat.connections import configured
    from armillary.config import Settings
    from armillary.domain.secrets import box_for

    try:
        settings = replace(Settings.from_env(), engine="off", auto_migrate=False)
        logs.configure(json_lines=settings.log_format == "json", level=logs.level_named(settings.log_level))
        db = settings.database()
        box = box_for(settings.secret_key, settings.secret_key_file)
        with db.session() as session:
            connections = configured(session, box)
    except (OSError, ValueError) as exc:
        typer.echo(f"armillary bot: {exc}", err=True)
        raise typer.Exit(2) from None
    if not connections:
        typer.echo("armillary bot: no chat connections: set ARMILLARY_CHAT_IRC / ARMILLARY_CHAT_XMPP or add one "
                   "with `armillary chat connections create`", err=True)
        raise typer.Exit(2)
    app = create_app(settings, db)
    names = ", ".join(f"{c.name} ({c.protocol} {c.host}:{c.port})" for c in connections)
    typer.echo(f"Armillary bot on {names}")
    try:
        asyncio.run(Bot(app, db, connections, settings_from_env()).run_forever())
    except KeyboardInterrupt:
        pass


def with_bot(app: Any, db: Any) -> Any:
    """``armillary serve`` (one process): start the bot beside the API when chat connections are configured.
    With ``--workers`` above 1 the bot is not started (each process would join as the same nick): run
    ``armillary bot`` beside the server instead."""
    from armillary.chat.bot import start_in_server

    app.state.chat_bot = start_in_server(app, db, app.state.secret_box)
    return app


def register(app: typer.Typer) -> None:
    chat_app.add_typer(connections_app, name="connections")
    app.add_typer(chat_app, name="chat")
    app.command("bot")(bot)

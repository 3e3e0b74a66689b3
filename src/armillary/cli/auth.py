"""Signing in: ``login``, ``logout``, ``whoami`` and ``token`` (your API tokens).

``armillary login`` exchanges a username and password for a token and keeps it in the credentials
file, under the server's URL (see client.py), so that every later command of that user sends it.
What it keeps is, by default, a *named, long-lived API token* ("cli@<hostname>", 30 days unless
``--expires-in-days`` says otherwise): the password gives a short-lived login token (12 hours),
which is used once to create the named token and then revoked. A named token shows up in
``armillary token list`` with its name and last use, and can be revoked from anywhere without the
password. ``--short`` keeps the login token itself instead (gone after the server's login lifetime;
nothing long-lived left on disk). Logging in again replaces, and revokes, the token stored before.

``logout`` revokes the token on the server and forgets it; ``whoami`` shows the account behind it
with its roles, quotas and usage.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from armillary.cli.client import (
    TOKEN_ENV,
    ApiClient,
    ApiError,
    CliError,
    CredentialStore,
    ref_path,
    server_key,
)
from armillary.cli.common import OutputOpt, client, command, fmt, state
from armillary.cli.output import Column, OutputFormat, dump, field, note, print_items, stderr, stdout

PASSWORD_ENV = "ARMILLARY_PASSWORD"
DEFAULT_CLI_TOKEN_DAYS = 30


# ---------------------------------------------------------------- shared helpers


def when(value: Any) -> str:
    """An API timestamp for a table, in UTC: ``2025-03-01 14:02:11Z`` (``-`` when there is none)."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def expiry(value: Any) -> str:
    return f"expires {when(value)}" if value else "never expires"


def mib(value: int | None) -> str:
    """A size in MiB for people: ``64G``, ``1536M``."""
    if value is None:
        return "unlimited"
    if value >= 1024 and value % 1024 == 0:
        return f"{value // 1024}G"
    return f"{value}M"


def password_from(given: str | None, prompt: str, confirm: bool) -> str:
    """A password: the option, else ARMILLARY_PASSWORD, else a hidden prompt ('-' always prompts)."""
    if given is not None and given != "-":
        return given
    if given is None and os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


def print_roles(roles: list[dict[str, Any]], admin: bool) -> None:
    """A user's grants as a table: role, and per quota what is used of the limit."""
    if not roles:
        stdout.print(Text("roles: none" + (" (an admin may do anything anywhere)" if admin else "")))
        return

    def used(usage: Any, limit: Any, size: bool = False) -> str:
        if size:
            return f"{mib(usage or 0)} / {mib(limit)}"
        return f"{usage or 0} / {'unlimited' if limit is None else limit}"

    table = Table(show_edge=False, box=None, header_style="bold", pad_edge=False)
    for header in ("ENVIRONMENT", "ROLE", "SYSTEMS", "CPU", "MEMORY"):
        table.add_column(header, overflow="fold")
    for grant in roles:
        quota, usage = grant.get("quota") or {}, grant.get("usage") or {}
        table.add_row(
            Text(str(grant.get("environment"))),
            Text(str(grant.get("role"))),
            Text(used(usage.get("systems"), quota.get("max_systems"))),
            Text(used(usage.get("cpu"), quota.get("max_cpu"))),
            Text(used(usage.get("memory_mb"), quota.get("max_memory_mb"), size=True)),
        )
    stdout.print(table)


def print_user(user: dict[str, Any], output: OutputFormat, extra: dict[str, Any] | None = None) -> None:
    """A user object: raw for json/yaml; for people its fields, then its roles as a table."""
    if output is not OutputFormat.table:
        dump(user, output)
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    rows = {
        "user": user.get("name"),
        "display name": user.get("display_name") or "-",
        "email": user.get("email") or "-",
        "source": user.get("source"),
        "admin": "yes" if user.get("admin") else "no",
        "active": "yes" if user.get("active") else "no",
        "last login": when(user.get("last_login_at")),
        "created": when(user.get("created_at")),
        **(extra or {}),
    }
    for key, value in rows.items():
        table.add_row(key, Text(str(value)))
    stdout.print(table)
    stdout.print()
    print_roles(user.get("roles") or [], bool(user.get("admin")))


def _revoke_quietly(api: ApiClient) -> None:
    """POST /auth/logout with the client's token; a token already dead or a server gone is fine here."""
    try:
        api.request("POST", "/auth/logout")
    except CliError:
        pass


# ---------------------------------------------------------------- login, logout, whoami


def login(
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="Your username (prompted for when missing)")
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            "-p",
            help=f"Your password (default: ${PASSWORD_ENV}, else a hidden prompt; avoid it in argv)",
            show_default=False,
        ),
    ] = None,
    token_name: Annotated[
        str | None,
        typer.Option("--token-name", help="Name of the token kept for this CLI (default: cli@<hostname>)"),
    ] = None,
    expires_in_days: Annotated[
        int,
        typer.Option("--expires-in-days", min=1, max=3650, help="Lifetime of the token kept for this CLI"),
    ] = DEFAULT_CLI_TOKEN_DAYS,
    short: Annotated[
        bool,
        typer.Option("--short", help="Keep the short-lived login token (hours) instead of a named API token"),
    ] = False,
) -> None:
    """Log in to the server and keep a token for the next commands (see `armillary token list`).

    By default the password buys a named API token (cli@<hostname>, 30 days), kept in the credentials file (0600).

    --short keeps the short-lived login token instead. Logging in again revokes the token kept before.
    """
    current = state()
    url = server_key(current.server)
    store = CredentialStore()
    previous = store.get(url)
    if username is None:
        username = typer.prompt("Username", default=(previous or {}).get("user") or None)
    secret = password_from(password, "Password", confirm=False)

    anonymous = current.client_as(None)
    try:
        answer = anonymous.post_json("/auth/login", {"username": username, "password": secret})
    except ApiError as error:
        if error.status == 401:
            detail = str(error.problem.get("detail") or "invalid username or password")
            raise CliError(f"login to {url} refused: {detail}") from None
        raise
    login_token, user = str(answer["token"]), str(answer.get("user") or username)

    if short:
        kept = {"token": login_token, "user": user, "expires_at": answer.get("expires_at")}
    else:
        session = current.client_as(login_token)
        try:
            name = (token_name or f"cli@{socket.gethostname()}")[:63]
            made = session.post_json("/auth/tokens", {"name": name, "expires_in_days": expires_in_days})
        finally:
            _revoke_quietly(session)  # the login token has done its job
        kept = {"token": str(made["token"]), "user": user, "expires_at": made.get("expires_at")}

    store.put(url, kept)
    if previous is not None and previous.get("token") != kept["token"]:
        _revoke_quietly(current.client_as(str(previous["token"])))
    stdout.print(Text(f"logged in to {url} as {user} (token {expiry(kept['expires_at'])})"), soft_wrap=True)
    if os.environ.get(TOKEN_ENV) or current.token_option:
        stderr.print(
            Text(f"note: {TOKEN_ENV} or --token is set and takes precedence over the stored login", style="yellow")
        )


def logout() -> None:
    """Revoke the token this CLI uses for the server and forget it."""
    current = state()
    url = server_key(current.server)
    store = CredentialStore()
    token, source = current.credentials()
    if token is None:
        stdout.print(Text(f"not logged in to {url}"))
        return
    stored = store.get(url)
    failure: CliError | None = None
    try:
        current.client_as(token, source).request("POST", "/auth/logout")
    except ApiError as error:
        if error.status != 401:  # 401: already expired or revoked, which is what we want
            failure = error
    except CliError as error:
        failure = error
    if stored is not None and stored.get("token") == token:
        store.remove(url)
    if failure is not None:
        failure.notes.append(
            "the token could not be revoked on the server: it stays valid until it expires "
            "(revoke it later with `armillary token revoke ID`)"
        )
        raise failure
    who = f" ({stored['user']})" if stored and stored.get("user") else ""
    stdout.print(Text(f"logged out of {url}{who}"))
    if source in ("--token", TOKEN_ENV):
        stderr.print(Text(f"the token from {source} is revoked; unset it", style="yellow"))


def whoami(output: OutputOpt = None) -> None:
    """Who the server knows you as: account, admin or not, roles per environment with quota and usage."""
    current = state()
    user = client().get_json("/auth/me")
    extra: dict[str, Any] = {"server": server_key(current.server)}
    stored = CredentialStore().get(current.server)
    _, source = current.credentials()
    if stored is not None and source not in ("--token", TOKEN_ENV):
        extra["token"] = expiry(stored.get("expires_at"))
    print_user(user, fmt(output), extra)


# ---------------------------------------------------------------- tokens

token_app = typer.Typer(
    help="Your API tokens: named, long-lived bearer tokens for scripts (admins: anyone's).",
    no_args_is_help=True,
)


def _current_prefix() -> str | None:
    token, _ = state().credentials()
    return token[:10] if token else None


TOKEN_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("KIND", field("kind")),
    ("USER", field("user")),
    ("PREFIX", field("prefix")),
    ("CREATED", lambda t: when(t.get("created_at"))),
    ("EXPIRES", lambda t: when(t.get("expires_at")) if t.get("expires_at") else "never"),
    ("LAST USED", lambda t: when(t.get("last_used_at"))),
]


@command(token_app, "list")
def token_list(
    user: Annotated[str | None, typer.Option("--user", help="Another user's tokens (admins)")] = None,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked tokens")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many, newest first")] = 100,
    output: OutputOpt = None,
) -> None:
    """List your tokens, newest first (the one this CLI uses is marked *); secrets are never shown again."""
    params = [("limit", str(limit))]
    if user:
        params.append(("user", user))
    if revoked:
        params.append(("include_revoked", "true"))
    items = client().get_json("/auth/tokens", params=params)
    mine = _current_prefix()
    columns = [("", lambda t: "*" if mine and t.get("prefix") == mine else ""), *TOKEN_COLUMNS]
    if revoked:
        columns.append(("REVOKED", lambda t: when(t.get("revoked_at"))))
    print_items(items, columns, fmt(output), page=items, empty="No tokens.")


@command(token_app, "create")
def token_create(
    name: Annotated[str, typer.Argument(help="What it is for (e.g. ci-deploy)", metavar="NAME")],
    expires_in_days: Annotated[
        int | None,
        typer.Option("--expires-in-days", min=1, max=3650, help="Lifetime (default: the server's, 90 days)",
                     show_default=False),
    ] = None,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="A token that never expires")] = False,
    output: OutputOpt = None,
) -> None:
    """Create a named token for a script; its secret is printed once, now."""
    if no_expiry and expires_in_days is not None:
        raise typer.BadParameter("give --expires-in-days or --no-expiry, not both", param_hint="--no-expiry")
    body: dict[str, Any] = {"name": name}
    if no_expiry:
        body["expires_in_days"] = None
    elif expires_in_days is not None:
        body["expires_in_days"] = expires_in_days
    made = client().post_json("/auth/tokens", body)
    shape = fmt(output)
    if shape is not OutputFormat.table:
        dump(made, shape)
    else:
        stdout.print(Text(f"created token {made['id']} {made['name']!r} ({expiry(made.get('expires_at'))})"))
        stdout.print(Text(str(made["token"])))
    stderr.print(
        Text("Copy the token now: it is not shown again. Use it as 'Authorization: Bearer <token>' "
             f"or with {TOKEN_ENV}.", style="yellow")
    )


@command(token_app, "revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="Token id (see `armillary token list`)", metavar="ID")],
    output: OutputOpt = None,
) -> None:
    """Revoke a token at once (yours; admins: anyone's)."""
    client().delete(f"/auth/tokens/{ref_path(token_id)}")
    note(f"Revoked token {token_id}.", fmt(output))


def register(app: typer.Typer) -> None:
    for fn in (login, logout, whoami):
        command(app)(fn)
    app.add_typer(token_app, name="token")

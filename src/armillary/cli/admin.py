"""``armillary admin``: account administration on the database directly, like ``migrate``.

For what the API cannot do for you: make the first admin of a fresh server, or give a locked-out
admin a new password. It works whether the server is running or not, with the same settings as
``armillary serve`` (ARMILLARY_DATA_DIR, ARMILLARY_DATABASE_URL), and upgrades the schema first.
The database modules are imported inside the command, so the client commands do not pay for them.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any, NoReturn

import typer

from armillary.config import Settings

PASSWORD_ENV = "ARMILLARY_PASSWORD"

admin_app = typer.Typer(
    help="Administration on the server's database directly (no API, no login): the first admin account.",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(code)


@admin_app.command("create-user")
def create_user(
    name: Annotated[str, typer.Argument(help="Username (letters, digits, _ . @ -)", metavar="NAME")],
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            help=f"Password, 8 characters or more (default: ${PASSWORD_ENV}, else a hidden, confirmed prompt)",
            show_default=False,
        ),
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an admin")] = False,
    display_name: Annotated[str | None, typer.Option("--display-name", help="Full name", show_default=False)] = None,
    email: Annotated[str | None, typer.Option("--email", help="Email address", show_default=False)] = None,
    update_password: Annotated[
        bool,
        typer.Option(
            "--update-password",
            help="If the user exists, set this password (and reactivate them; with --admin, make them admin) "
            "instead of failing: for a locked-out admin (a new password revokes their old tokens)",
        ),
    ] = False,
) -> None:
    """Create a local user straight in the database: `armillary admin create-user admin --admin`."""
    from pydantic import ValidationError
    from sqlalchemy import select

    from armillary.api.users import create_user as create_account
    from armillary.auth import passwords, throttle, tokens
    from armillary.domain import migrate as migrations
    from armillary.domain.account_schemas import UserCreate
    from armillary.domain.accounts import User
    from armillary.domain.db import Database
    from armillary.domain.errors import DomainError

    logging.basicConfig(level=logging.WARNING)
    if password is None:
        password = os.environ.get(PASSWORD_ENV) or typer.prompt(
            f"Password for {name}", hide_input=True, confirmation_prompt=True
        )
    fields: dict[str, Any] = {"name": name, "password": password, "admin": admin}
    if display_name is not None:
        fields["display_name"] = display_name
    if email is not None:
        fields["email"] = email
    try:
        body = UserCreate(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'input'}: {e['msg']}" for e in exc.errors())
        _fail(problems, 2)

    db = Database(Settings.from_env().database_url)
    try:
        migrations.upgrade(db)
        with db.session() as session:
            existing = session.scalars(select(User).where(User.name == body.name)).first()
            if existing is None:
                create_account(session, body)
                done = f"created {'admin ' if body.admin else ''}user {body.name}"
            elif not update_password:
                _fail(f"a user named {body.name!r} already exists (--update-password sets a new password)")
            elif existing.source != "local":
                _fail(f"{body.name} is a directory (LDAP) user: set the password in the directory")
            else:
                passwords.check_strength(body.password or "")
                # A new password ends every token handed out under the old one; the same one (scripts
                # making sure an admin exists) changes nothing.
                changed = not passwords.verify_password(existing.password_hash, body.password or "")
                existing.password_hash = passwords.hash_password(body.password or "")
                revoked = tokens.revoke_all(session, existing.id) if changed else 0
                throttle.clear(session, throttle.USER, existing.name)
                also = [f"{revoked} token{'s' if revoked != 1 else ''} revoked"] if revoked else []
                if not existing.active:
                    existing.active = True
                    also.append("reactivated")
                if body.admin and not existing.is_admin:
                    existing.is_admin = True
                    also.append("made admin")
                for attribute, value in (("display_name", display_name), ("email", email)):
                    if value is not None:
                        setattr(existing, attribute, value)
                done = f"set a new password for user {body.name}" + (f" ({', '.join(also)})" if also else "")
    except DomainError as exc:
        _fail(exc.detail)
    finally:
        db.dispose()
    typer.echo(done)


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")

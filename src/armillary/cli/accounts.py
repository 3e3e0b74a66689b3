"""Admin commands over the REST API: ``user`` (accounts, roles and quotas); the trail is ``audit`` (audit.py).

Both need an admin's token; a non-admin gets the server's 403. Accounts made here are local
(password) accounts; directory (LDAP) users appear on their first login. To make the very first
admin, or to reset a locked-out admin's password, use ``armillary admin create-user`` on the
server's database instead.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from armillary.cli.auth import mib, password_from, print_user, when
from armillary.cli.client import ref_path
from armillary.cli.common import (
    AllOpt,
    LimitOpt,
    OutputOpt,
    client,
    command,
    delete_command,
    fmt,
    list_pages,
    require_changes,
)
from armillary.cli.output import Column, OutputFormat, field, note, print_items, print_object

UserArg = Annotated[str, typer.Argument(help="Username (or id)", metavar="NAME")]
EnvArg = Annotated[str, typer.Argument(help="Environment (id or name)", metavar="ENV")]


class RoleChoice(str, Enum):
    operator = "operator"
    user = "user"
    viewer = "viewer"


DisplayNameOpt = Annotated[str | None, typer.Option("--display-name", help="Full name", show_default=False)]
EmailOpt = Annotated[str | None, typer.Option("--email", help="Email address", show_default=False)]


# ================================================================ users

user_app = typer.Typer(
    help="User accounts (admins): create, change, grant a role and quota per environment.",
    no_args_is_help=True,
)
USER_COLUMNS: list[Column] = [
    ("ID", field("id")),
    ("NAME", field("name")),
    ("DISPLAY NAME", field("display_name")),
    ("SOURCE", field("source")),
    ("ADMIN", field("admin")),
    ("ACTIVE", field("active")),
    ("ROLES", lambda u: ", ".join(f"{g['environment']}={g['role']}" for g in u.get("roles") or []) or "-"),
    ("LAST LOGIN", lambda u: when(u.get("last_login_at"))),
]


@command(user_app, "list")
def user_list(
    q: Annotated[str | None, typer.Option("--q", "-q", help="Name prefix")] = None,
    limit: LimitOpt = None,
    every: AllOpt = False,
    output: OutputOpt = None,
) -> None:
    """List user accounts."""
    list_pages("/users", [("q", q)] if q else [], limit, every, USER_COLUMNS, output, "users")


@command(user_app, "show")
def user_show(ref: UserArg, output: OutputOpt = None) -> None:
    """Show an account with its roles, quotas and usage."""
    print_user(client().get_json(f"/users/{ref_path(ref)}"), fmt(output))


@command(user_app, "create")
def user_create(
    name: Annotated[str, typer.Argument(help="Username (letters, digits, _ . @ -)", metavar="NAME")],
    password: Annotated[
        str | None,
        typer.Option("--password", help="Password (default: $ARMILLARY_PASSWORD, else a hidden prompt)",
                     show_default=False),
    ] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Make them an admin (everything, everywhere)")] = False,
    display_name: DisplayNameOpt = None,
    email: EmailOpt = None,
    output: OutputOpt = None,
) -> None:
    """Create a local account: `armillary user create alice --display-name 'Alice Liddell'`."""
    secret = password_from(password, f"Password for {name}", confirm=True)
    body: dict[str, Any] = {"name": name, "password": secret, "admin": admin}
    if display_name is not None:
        body["display_name"] = display_name
    if email is not None:
        body["email"] = email
    print_user(client().post_json("/users", body), fmt(output))


@command(user_app, "update")
def user_update(
    ref: UserArg,
    password: Annotated[
        str | None,
        typer.Option("--password", help="New password; '-' asks for it (hidden)", show_default=False),
    ] = None,
    admin: Annotated[bool | None, typer.Option("--admin/--no-admin", help="Grant or take away admin",
                                               show_default=False)] = None,
    active: Annotated[bool | None, typer.Option("--active/--inactive",
                                                help="Inactive: refuse their logins and every token at once",
                                                show_default=False)] = None,
    display_name: DisplayNameOpt = None,
    email: EmailOpt = None,
    output: OutputOpt = None,
) -> None:
    """Change an account (only what is given)."""
    body: dict[str, Any] = {}
    if password is not None:
        body["password"] = password_from(password, f"New password for {ref}", confirm=True)
    for key, value in (("admin", admin), ("active", active), ("display_name", display_name), ("email", email)):
        if value is not None:
            body[key] = value
    require_changes(body)
    print_user(client().patch_json(f"/users/{ref_path(ref)}", body), fmt(output))


delete_command(
    user_app,
    "/users",
    "user",
    "Delete an account and its tokens (their systems stay, without an owner).",
    ref_help="Username (or id)",
    ref_metavar="NAME",
)


@command(user_app, "grant")
def user_grant(
    ref: UserArg,
    environment: EnvArg,
    role: Annotated[RoleChoice, typer.Option("--role", "-r", help="The role there")],
    max_systems: Annotated[int | None, typer.Option("--max-systems", min=0, help="Quota: systems (default: no limit)",
                                                    show_default=False)] = None,
    max_cpu: Annotated[int | None, typer.Option("--max-cpu", min=0, help="Quota: CPUs (default: no limit)",
                                                show_default=False)] = None,
    max_memory: Annotated[str | None, typer.Option("--max-memory", help="Quota: memory, MiB or e.g. 64G "
                                                   "(default: no limit)", show_default=False)] = None,
    output: OutputOpt = None,
) -> None:
    """Give a user a role in an environment, with a quota; replaces their previous role and quota there.

    operator: every action on every system there; user: their own systems, within the quota; viewer: read only.
    """
    body: dict[str, Any] = {"role": role.value}
    for key, value in (("max_systems", max_systems), ("max_cpu", max_cpu), ("max_memory", max_memory)):
        if value is not None:
            body[key] = value
    grant = client().request("PUT", f"/users/{ref_path(ref)}/roles/{ref_path(environment)}", json=body).json()
    shape = fmt(output)
    if shape is not OutputFormat.table:
        print_object(grant, shape)
        return
    quota = grant.get("quota") or {}
    def limit(value: Any) -> str:
        return "unlimited" if value is None else str(value)

    limits = (f"systems {limit(quota.get('max_systems'))}, cpu {limit(quota.get('max_cpu'))}, "
              f"memory {mib(quota.get('max_memory_mb'))}")
    note(f"Granted {ref} the {grant['role']} role in {grant['environment']} ({limits}).", shape)


@command(user_app, "revoke")
def user_revoke(ref: UserArg, environment: EnvArg, output: OutputOpt = None) -> None:
    """Take a user's role in an environment away (their systems there stay theirs)."""
    client().delete(f"/users/{ref_path(ref)}/roles/{ref_path(environment)}")
    note(f"Revoked {ref}'s role in {environment}.", fmt(output))


LOCKOUT_COLUMNS: list[Column] = [
    ("SCOPE", field("scope")),
    ("NAME OR ADDRESS", field("key")),
    ("FAILURES", field("failures")),
    ("LOCKED UNTIL", lambda t: when(t.get("locked_until"))),
    ("FORGOTTEN AT", lambda t: when(t.get("reset_at"))),
]


@command(user_app, "lockouts")
def user_lockouts(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="At most this many")] = 100,
    output: OutputOpt = None,
) -> None:
    """Names and client addresses with failed logins not yet forgotten, locked-out ones first."""
    items = client().get_json("/auth/throttles", params=[("limit", str(limit))])
    print_items(items, LOCKOUT_COLUMNS, fmt(output), page=items, empty="No failed logins.")


@command(user_app, "unlock")
def user_unlock(
    ref: Annotated[str | None, typer.Argument(help="Username (or id)", metavar="[NAME]", show_default=False)] = None,
    address: Annotated[str | None, typer.Option("--address", show_default=False,
                                                help="A client address instead (see `user lockouts`)")] = None,
    output: OutputOpt = None,
) -> None:
    """Forget a user's failed logins and lift their login lockout at once (or an address's: --address)."""
    if (ref is None) == (address is None):
        raise typer.BadParameter("give a user NAME or --address, one of them", param_hint="NAME")
    if ref is not None:
        client().request("POST", f"/users/{ref_path(ref)}/unlock")
        note(f"Unlocked the logins of {ref}.", fmt(output))
    else:
        client().delete(f"/auth/throttles/address/{ref_path(address or '')}")
        note(f"Unlocked the logins from {address}.", fmt(output))


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")

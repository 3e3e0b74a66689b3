"""Plumbing shared by the client commands: global options, error reporting, ``k=v`` flags, files,
the arguments and options several resources take, and the ``list``/``show``/``delete`` commands that
every resource has.

The commands themselves are one module per command group (environments.py, hypervisors.py,
types.py, systems.py, groups.py, variables.py, drivers.py, labels.py, actions.py, jobs.py,
schedules.py, auth.py, accounts.py; server.py, admin.py and doctor.py for the server side), each with a
``register(app)`` that main.py calls; create/update helpers are in edits.py, following a job live
in watch.py. A new command group goes in a module of its own, registered in main.py.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.text import Text

from armillary.cli.client import (
    DEFAULT_URL,
    TOKEN_ENV,
    URL_ENV,
    ApiClient,
    CliError,
    CredentialStore,
    Document,
    ref_path,
)
from armillary.cli.output import Column, OutputFormat, note, print_items, print_object, stderr

F = TypeVar("F", bound=Callable[..., Any])

OUTPUT_HELP = "Output format: table (for people), json or yaml (the raw API objects, for scripts)"

OutputOpt = Annotated[
    OutputFormat | None,
    typer.Option("--output", "-o", help=OUTPUT_HELP + ". Overrides the global --output.", show_default=False),
]
LimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        min=1,
        max=1000,
        show_default=False,
        help="Page size (1-1000). Without --all, at most this many items are shown (default 100).",
    ),
]
AllOpt = Annotated[bool, typer.Option("--all", help="Follow the `next` links and show every item.")]
FileOpt = Annotated[
    Path | None,
    typer.Option(
        "--file",
        "-f",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        allow_dash=True,
        show_default=False,
        help="A YAML or JSON document sent as is (instead of the field flags); '-' reads stdin.",
    ),
]
VarOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--var",
        metavar="KEY=VALUE",
        help="Variable key=value (value read as YAML: 2, true, \\[a, b]); repeat.",
        show_default=False,
    ),
]
UnsetVarOpt = Annotated[
    list[str] | None,
    typer.Option("--unset-var", metavar="KEY", help="Remove a variable; repeat.", show_default=False),
]
REF_HELP = "Id or name"
DescriptionOpt = Annotated[
    str | None, typer.Option("--description", "-d", help="Description", show_default=False)
]
SYSTEM_REF_HELP = "Id or hostname"
RefArg = Annotated[str, typer.Argument(help=REF_HELP, metavar="REF")]
NameArg = Annotated[str | None, typer.Argument(help="Name", metavar="NAME", show_default=False)]
RenameOpt = Annotated[str | None, typer.Option("--name", help="Rename it")]
EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Environment (id or name)")]
EnvFilterOpt = Annotated[str | None, typer.Option("--env", "-e", help="Only this environment (id or name)")]


@dataclass
class State:
    """What the root callback learned: where the server is, the token to send, the default output format.

    Every client of one invocation shares one request id (see client.py).
    """

    server: str = DEFAULT_URL
    output: OutputFormat = OutputFormat.table
    token_option: str | None = field(default=None, repr=False)
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _client: ApiClient | None = field(default=None, repr=False)
    _others: list[ApiClient] = field(default_factory=list, repr=False)

    def credentials(self) -> tuple[str | None, str | None]:
        """The token to send and where it came from: --token, ARMILLARY_TOKEN, else the stored login."""
        if self.token_option:
            return self.token_option, "--token"
        if os.environ.get(TOKEN_ENV):
            return os.environ[TOKEN_ENV], TOKEN_ENV
        store = CredentialStore()
        stored = store.get(self.server)
        if stored is not None:
            return str(stored["token"]), f"the login stored in {store.path}"
        return None, None

    @property
    def client(self) -> ApiClient:
        """The client of this invocation, with its credentials."""
        if self._client is None:
            token, source = self.credentials()
            self._client = ApiClient(self.server, request_id=self.request_id, token=token, token_source=source)
        return self._client

    def client_as(self, token: str | None, source: str | None = None) -> ApiClient:
        """Another client of the same server and request id, sending ``token`` (None: no credentials)."""
        other = ApiClient(self.server, request_id=self.request_id, token=token, token_source=source)
        self._others.append(other)
        return other

    def close(self) -> None:
        for other in self._others:
            other.close()
        if self._client is not None:
            self._client.close()


def root_callback(
    ctx: typer.Context,
    server: Annotated[
        str,
        typer.Option(
            "--server", "-s", envvar=URL_ENV, help="Base URL of the Armillary server", metavar="URL"
        ),
    ] = DEFAULT_URL,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help=OUTPUT_HELP)] = OutputFormat.table,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            show_default=False,
            help=f"API token to send (default: ${TOKEN_ENV}, else the one `armillary login` stored for --server)",
        ),
    ] = None,
) -> None:
    """Armillary: describe a machine once; create, provision, deploy and destroy it anywhere.

    The client commands talk to the server at --server (or ARMILLARY_URL) over its REST API.

    They send the token `armillary login` stored for that server (or --token, or ARMILLARY_TOKEN).

    -o/--output goes before or after the command: `armillary -o json env list`, `armillary env list -o json`.

    json and yaml print the API's own objects, unchanged, for scripts; messages and errors go to stderr.

    Exit codes: 0 success, 1 refused by the server or unreachable (the request id is printed), 2 usage error.
    """
    global _current
    _current = ctx.obj = State(server=server, output=output, token_option=token)
    ctx.call_on_close(_current.close)


# One invocation per process: the root callback sets this before any command runs.
_current: State | None = None


def state() -> State:
    global _current
    if _current is None:  # a command invoked without the root callback
        _current = State()
    return _current


def fmt(output: OutputFormat | None) -> OutputFormat:
    return output or state().output


def client() -> ApiClient:
    return state().client


def report(error: CliError) -> None:
    """Print an error on stderr: the message, its detail lines, and the request id to trace it."""
    stderr.print(Text("Error: ", style="bold red") + Text(error.message))
    for line in error.lines:
        stderr.print(Text(f"  - {line}"))
    for line in error.notes:
        stderr.print(Text(line))
    request_id = getattr(error, "request_id", None)
    if request_id is None and _current is not None and (_current._client is not None or _current._others):
        request_id = _current.request_id
    if request_id:
        stderr.print(Text(f"  request id: {request_id}", style="dim"))


def handles_errors(fn: F) -> F:
    """Turn a :class:`CliError` raised by a command into a report on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CliError as error:
            if error.exit_code == 2:
                raise typer.BadParameter(error.message) from None
            report(error)
            raise typer.Exit(error.exit_code) from None

    return wrapper  # type: ignore[return-value]


def command(app: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """Register ``fn`` as a command of ``app`` with API errors reported, not raised."""

    def decorate(fn: F) -> F:
        app.command(name, **kwargs)(handles_errors(fn))
        return fn

    return decorate


# ---------------------------------------------------------------- k=v flags


_INT = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][-+]?[0-9]+)?$")


def parse_value(text: str) -> Any:
    """A flag value read as a YAML 1.2 (core schema) scalar: numbers, ``true``/``false``, ``null``.

    ``2`` is an integer, ``0.5`` a float, ``true`` a bool, ``null`` (or ``~``) removes nothing but is
    null; a quoted value (``'"2"'``) is the string inside the quotes; ``[a, b]`` and ``{a: 1}`` are a
    list and a mapping in YAML flow style. Anything else is the string as typed: ``yes``, ``no``,
    ``0755``, ``1:20`` and dates stay strings (the YAML 1.1 surprises do not apply), and so does an
    empty value.
    """
    stripped = text.strip()
    if _INT.match(stripped):
        return int(stripped)
    if _FLOAT.match(stripped) and any(c in stripped for c in ".eE"):
        return float(stripped)
    lowered = stripped.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~"):
        return None
    if stripped[:1] in ("[", "{", "'", '"'):
        try:
            value = yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            raise ValueError(f"{text!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
        return value
    return text


def parse_pairs(values: Iterable[str] | None, option: str, yaml_values: bool = True) -> dict[str, Any]:
    """``["a=1", "b=x"]`` → ``{"a": 1, "b": "x"}``; a malformed pair is a usage error naming ``option``."""
    pairs: dict[str, Any] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not key=value", param_hint=option)
        try:
            pairs[key] = parse_value(value) if yaml_values else value
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint=option) from None
    return pairs


def merged(
    current: dict[str, Any] | None, add: dict[str, Any], remove: Iterable[str] | None
) -> dict[str, Any]:
    result = dict(current or {})
    result.update(add)
    for key in remove or ():
        result.pop(key, None)
    return result


# ---------------------------------------------------------------- files


def read_bytes(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None


def document(path: Path) -> Document:
    return Document(name=str(path), raw=read_bytes(path))


def parse_documents(name: str, raw: bytes) -> list[Any]:
    """Every document in a file: JSON (``.json``) or a YAML stream of one or more documents."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CliError(f"{name}: not UTF-8 text") from None
    if name.lower().endswith(".json"):
        try:
            return [json.loads(text)]
        except json.JSONDecodeError as exc:
            raise CliError(f"{name}: not valid JSON: {exc}") from None
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise CliError(f"{name}: not valid YAML: {exc}") from None


def load_mapping(path: Path, what: str) -> dict[str, Any]:
    docs = [d for d in parse_documents(str(path), read_bytes(path)) if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise CliError(f"{path}: {what} must be one YAML or JSON mapping")
    return docs[0]


def require_changes(body: dict[str, Any]) -> None:
    if not body:
        raise typer.BadParameter("nothing to change: give at least one flag, or --file")


def file_or_flags(file: Path | None, flags_given: bool) -> Document | None:
    """``--file`` replaces the field flags; combining them is a usage error."""
    if file is None:
        return None
    if flags_given:
        raise typer.BadParameter(
            "give either --file or field flags (and the name argument), not both", param_hint="--file"
        )
    return document(file)


# ---------------------------------------------------------------- list, show, delete
#
# Every resource has these three, alike but for the API path, the columns and the words: the
# factories below make them, so that a change to paging, output or messages is made once. A list
# with filters has its own function (its options are its signature) and calls list_pages.


def list_pages(
    path: str,
    params: list[tuple[str, str]],
    limit: int | None,
    every: bool,
    columns: list[Column],
    output: OutputFormat | None,
    what: str,
) -> None:
    """Fetch one page, or all of them, and print them."""
    items: list[dict[str, Any]] = []
    next_url = None
    for page in client().pages(path, params, limit or (1000 if every else 100), every):
        items.extend(page.get("items", []))
        next_url = page.get("next")
    shape = fmt(output)
    print_items(items, columns, shape, page={"items": items, "next": next_url}, empty=f"No {what}.")
    if next_url and shape is OutputFormat.table:
        stderr.print(
            f"[dim]More {what} exist: use --all to see every one, or --limit to see more per page.[/dim]"
        )


def list_command(app: typer.Typer, path: str, columns: list[Column], what: str, doc: str) -> None:
    """Add ``list`` (--limit, --all, -o; no filters) to ``app``: the items at ``path``, as ``columns``."""

    def list_(limit: LimitOpt = None, every: AllOpt = False, output: OutputOpt = None) -> None:
        list_pages(path, [], limit, every, columns, output, what)

    list_.__doc__ = doc
    command(app, "list")(list_)


def show_command(
    app: typer.Typer, path: str, doc: str, ref_help: str = REF_HELP, ref_metavar: str = "REF"
) -> None:
    """Add ``show REF`` to ``app``: prints the object at ``path/REF``."""

    # The argument is declared as a default, not in Annotated: the annotations of a nested function
    # are read against the module's globals, where ref_help and ref_metavar are not.
    def show(ref: str = typer.Argument(help=ref_help, metavar=ref_metavar), output: OutputOpt = None) -> None:
        print_object(client().get_json(f"{path}/{ref_path(ref)}"), fmt(output))

    show.__doc__ = doc
    command(app, "show")(show)


def delete_command(
    app: typer.Typer, path: str, what: str, doc: str, ref_help: str = REF_HELP, ref_metavar: str = "REF"
) -> None:
    """Add ``delete REF`` to ``app``: deletes the object at ``path/REF`` and says so."""

    def delete(
        ref: str = typer.Argument(help=ref_help, metavar=ref_metavar), output: OutputOpt = None
    ) -> None:
        client().delete(f"{path}/{ref_path(ref)}")
        note(f"Deleted {what} {ref}.", fmt(output))

    delete.__doc__ = doc
    command(app, "delete")(delete)

"""``create`` and ``update`` of the client commands: field flags or ``--file``, and the PATCH they send.

Conventions, the same for every resource (environments.py, hypervisors.py, types.py, systems.py,
groups.py):

* ``list`` shows one page (``--limit``, default 100) or every page (``--all``), with the filters the
  API has; ``show``, ``update`` and ``delete`` take an id or a name (a system: id or hostname).
* ``create`` and ``update`` take flags for the common fields, or ``--file`` with a whole YAML/JSON
  document sent as is (the seed shapes are accepted by the API too).
* ``update`` changes only what is given (PATCH). ``--var``/``--label``/``--config``/``--prop`` are
  merged into the stored mapping (``--unset-*`` removes keys): the CLI reads the resource, merges,
  and writes it back with ``If-Match``, so a concurrent change is refused instead of overwritten.
* Values of ``--var``, ``--config`` and ``--prop`` are read as YAML scalars (``2``, ``true``,
  ``[a, b]``); quote them to keep a string (``--var 'port="8080"'``). Label values are strings.

``list`` (without filters), ``show`` and ``delete`` are made by the factories in common.py; each
resource module declares only what is its own: its path, columns, filters and field flags.
"""

from __future__ import annotations

from typing import Any

import typer

from armillary.cli.common import client, fmt, merged, parse_pairs, require_changes
from armillary.cli.output import OutputFormat, print_object


def flags_given(*flags: Any) -> bool:
    """Whether any field flag was given (None is "not given"): --file may not be combined with them."""
    return any(flag is not None for flag in flags)


def put_given(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``body`` with the fields that were given added (None is "not given", so not sent)."""
    body.update((key, value) for key, value in fields.items() if value is not None)
    return body


def need(value: Any, what: str) -> Any:
    """``value``, which a create without --file must have: missing, it is a usage error naming ``what``."""
    if value is None:
        raise typer.BadParameter(f"missing {what} (or give --file)")
    return value


def send_created(path: str, body: dict[str, Any] | None, doc: Any, output: OutputFormat | None) -> None:
    """POST ``body`` (or the --file document as is) to ``path`` and print what was created."""
    api = client()
    result = api.send_document("POST", path, doc) if doc is not None else api.post_json(path, body)
    print_object(result, fmt(output))


class Patch:
    """The body of an ``update`` built from its flags, then sent as one PATCH.

    Merging flags into a stored mapping (``--var`` into ``variables``) needs the stored object: it
    is read at most once, when first needed, and its ETag goes back with the PATCH (``If-Match``)
    so a change made in between is refused instead of overwritten. Without a merge nothing is read
    and no ETag is sent.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.body: dict[str, Any] = {}
        self.etag: str | None = None
        self._current: dict[str, Any] | None = None

    def current(self) -> dict[str, Any]:
        """The stored object (read once)."""
        if self._current is None:
            response = client().get(self.path)
            self._current, self.etag = response.json(), response.headers.get("etag")
        return self._current

    def merge(
        self, key: str, add: list[str] | None, remove: list[str] | None, option: str, yaml_values: bool = True
    ) -> None:
        """``--OPTION k=v`` / ``--unset-OPTION k`` merged into the stored mapping ``key``, if given."""
        if add or remove:
            stored = self.current().get(key)
            self.body[key] = merged(stored, parse_pairs(add, option, yaml_values=yaml_values), remove)

    def set(self, **fields: Any) -> None:
        """The plain fields that were given (None is "not given")."""
        put_given(self.body, **fields)

    def send(self, doc: Any, output: OutputFormat | None) -> None:
        """PATCH the body (refused when empty), or the --file document as is, and print the result."""
        api = client()
        if doc is not None:
            result = api.send_document("PATCH", self.path, doc)
        else:
            require_changes(self.body)
            result = api.patch_json(self.path, self.body, self.etag)
        print_object(result, fmt(output))

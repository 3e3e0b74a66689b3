"""``armillary system import FILE...``: define many systems from YAML/JSON files.

Each file holds one system document, a list of them, or a YAML stream of several documents
(each a system or a list). Documents may be in the canonical shape or the seed shape
(``{env, machine: {hostname, ...}, <driver>: {...}, type}``); the API translates them.

Items are sent in batches (500 by default) to ``POST /api/v1/systems/import``. The server takes a
batch all or nothing; batches before a failing one stay created. On failure the command names the
file (and document/item) the server refused, with the problem detail and field errors, says how
many systems were created before it, and exits 1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from armillary.cli.client import ApiError, CliError
from armillary.cli.common import OutputOpt, client, fmt, parse_documents, read_bytes
from armillary.cli.output import OutputFormat, dump, note, stderr

BATCH_SIZE = 500
_ITEM_FIELD = re.compile(r"^items\[(\d+)\]\.?(.*)$")
_ITEM_DETAIL = re.compile(r"^items\[(\d+)\]:\s*(.*)$", re.DOTALL)


@dataclass
class Item:
    origin: str
    body: dict[str, Any]


def _hostname(body: dict[str, Any]) -> str | None:
    machine = body.get("machine")
    name = body.get("hostname") or (machine.get("hostname") if isinstance(machine, dict) else None)
    return str(name) if name else None


def collect(paths: list[Path]) -> list[Item]:
    """Every system document in the files, each with where it came from."""
    items: list[Item] = []
    for path in paths:
        docs = parse_documents(str(path), read_bytes(path))
        present = [(n, d) for n, d in enumerate(docs, 1) if d is not None]
        for number, doc in present:
            where = str(path) + (f", document {number}" if len(docs) > 1 else "")
            entries = list(enumerate(doc, 1)) if isinstance(doc, list) else [(0, doc)]
            for index, entry in entries:
                origin = where + (f", item {index}" if index else "")
                if not isinstance(entry, dict):
                    raise CliError(f"{origin}: expected a system (a mapping), found {type(entry).__name__}")
                hostname = _hostname(entry)
                items.append(Item(origin + (f" ({hostname})" if hostname else ""), entry))
    return items


def _failure(error: ApiError, batch: list[Item], first: int, created: int, total: int) -> CliError:
    """Name the item the server refused (its ``items[i]``), with the problem's detail and fields."""
    index: int | None = None
    lines: list[str] = []
    for err in error.field_errors:
        match = _ITEM_FIELD.match(str(err.get("field", "")))
        if match:
            index = int(match.group(1)) if index is None else index
            lines.append(f"{match.group(2) or '(the item)'}: {err.get('message')}")
        else:
            lines.append(f"{err.get('field')}: {err.get('message')}")
    detail = str(error.problem.get("detail") or "")
    match = _ITEM_DETAIL.match(detail)
    if match:
        index = int(match.group(1)) if index is None else index
        detail = match.group(2)
    title = str(error.problem.get("title") or f"HTTP {error.status}")
    if index is not None and 0 <= index < len(batch):
        where = batch[index].origin
    else:
        where = (
            f"the batch of items {first + 1}-{first + len(batch)} ({batch[0].origin} … {batch[-1].origin})"
        )
    detail = detail.lstrip(".")  # the API may prefix an item's field path with a dot
    message = f"import failed at {where}: {title} ({error.status})" + (f": {detail}" if detail else "")
    lines = [line for line in lines if line not in detail]
    not_sent = total - first - len(batch)
    note = (
        f"{created} of {_systems(total)} created before the failure; the failing batch of {_systems(len(batch))} "
        f"was not saved (each batch is all or nothing)"
        + (f"; {_systems(not_sent)} not sent" if not_sent else "")
        + "."
    )
    return CliError(message, lines, notes=[note])


def _systems(count: int) -> str:
    return f"{count} system{'s' if count != 1 else ''}"


def import_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            dir_okay=False,
            allow_dash=True,
            metavar="FILE...",
            help="YAML or JSON files: a system, a list of systems, or a YAML stream of them",
        ),
    ],
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=1, max=BATCH_SIZE, help="Systems per request (all or nothing each)"),
    ] = BATCH_SIZE,
    output: OutputOpt = None,
) -> None:
    """Define systems from files, in batches: `armillary system import hosts/*.yaml`.

    On a refused item, prints the file and item, the problem detail and field errors, how many
    systems were created before it, and exits 1.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    items = collect(files)
    if not items:
        raise CliError(f"no systems found in {', '.join(str(f) for f in files)}")
    api, shape = client(), fmt(output)
    created, ids = 0, []
    with Progress(
        TextColumn("Importing systems"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
    ) as progress:
        task = progress.add_task("import", total=len(items))
        for first in range(0, len(items), batch_size):
            batch = items[first : first + batch_size]
            try:
                result = api.post_json("/systems/import", {"items": [item.body for item in batch]})
            except ApiError as error:
                progress.stop()
                raise _failure(error, batch, first, created, len(items)) from None
            created += int(result.get("created", len(batch)))
            ids.extend(result.get("ids", []))
            progress.advance(task, len(batch))
    if shape is OutputFormat.table:
        note(f"Imported {_systems(created)} from {len(files)} file{'s' if len(files) != 1 else ''}.", shape)
    else:
        dump({"created": created, "ids": ids}, shape)

"""The real app served over real HTTP by uvicorn, in a thread of the test process."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from armillary.api.app import create_app
from armillary.config import Settings
from armillary.domain.db import Database

# The apps running_app serves, by base URL (for changed_settings).
_APPS: dict[str, FastAPI] = {}

# Migrating a new database and starting the engine take ~3 s on idle cores; test processes share two cores.
START_TIMEOUT_S = 120.0


@contextmanager
def changed_settings(base_url: str, **changes: Any) -> Iterator[Settings]:
    """The settings of the app served at ``base_url`` with ``changes`` (``scripts_dir=...``) for a while,
    then as they were: what its routes read (``app.state.settings``) and its steps (``runtime.settings``)."""
    app = _APPS[base_url]
    before = app.state.settings
    changed = dataclasses.replace(before, **changes)
    app.state.settings = app.state.engine.runtime.settings = changed
    try:
        yield changed
    finally:
        app.state.settings = app.state.engine.runtime.settings = before


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(
    database_url: str, data_dir: Path, customize: Callable[[FastAPI], None] | None = None, **settings_overrides
) -> Iterator[tuple[str, Database]]:
    """Start the app on a free loopback port; yield its base URL and its database handle.

    ``customize`` may add test-only routes (e.g. one that fails) before the app serves."""
    settings = Settings(
        data_dir=data_dir, database_url=database_url, secret_key="test-secret-key", **settings_overrides
    )
    db = Database(database_url)
    app = create_app(settings, db)
    if customize is not None:
        customize(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"test server did not start in {START_TIMEOUT_S:.0f}s (alive: {thread.is_alive()})")
        time.sleep(0.02)
    base_url = f"http://127.0.0.1:{port}"
    _APPS[base_url] = app
    try:
        yield base_url, db
    finally:
        _APPS.pop(base_url, None)
        server.should_exit = True
        thread.join(timeout=10)

"""The HTTP side of the ``armillary`` client commands: one API client per invocation.

Every request of one invocation carries the same ``X-Request-ID`` (a fresh UUID), so a failing
command can be traced in the server's logs: the id is printed with every error.

Failures reach the user as :class:`CliError` (a message, optional detail lines, exit code 1):
an RFC 9457 problem from the API becomes its title, detail and field errors; an unreachable
server becomes a message naming the URL that was tried; a 401 adds a hint to log in.

Credentials: every request carries ``Authorization: Bearer <token>`` when the invocation has a
token. Where it comes from, first found wins: the root ``--token`` option, the ``ARMILLARY_TOKEN``
environment variable, else the token ``armillary login`` stored for that server URL in the
credentials file (:class:`CredentialStore`): ``credentials.json`` in the user's configuration
directory (``platformdirs.user_config_dir("armillary")``, or ``ARMILLARY_CONFIG_DIR``), written
with mode 0600 in a directory made 0700, as ``{"servers": {"<base url>": {"token": ...,
"user": ..., "expires_at": ...}}}``.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from armillary import __version__

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "ARMILLARY_URL"
API_PREFIX = "/api/v1"
MAX_LIMIT = 1000
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
TOKEN_ENV = "ARMILLARY_TOKEN"
CONFIG_DIR_ENV = "ARMILLARY_CONFIG_DIR"
NOT_LOGGED_IN = "not logged in or the token expired: run `armillary login`"


class CliError(Exception):
    """A failure to report on stderr: ``message``, then each of ``lines``; exit with ``exit_code``."""

    def __init__(
        self, message: str, lines: list[str] | None = None, exit_code: int = 1, notes: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.lines = list(lines or [])
        self.notes = list(notes or [])
        self.exit_code = exit_code


class ApiError(CliError):
    """The API answered with an error status; ``problem`` is its problem+json body (or a stand-in)."""

    def __init__(
        self, status: int, problem: dict[str, Any], request_id: str | None, token_source: str | None = None
    ) -> None:
        self.status = status
        self.problem = problem
        self.request_id = request_id
        title = str(problem.get("title") or f"HTTP {status}")
        detail = str(problem.get("detail") or "")
        message = f"{title} ({status})" + (f": {detail}" if detail and detail != title else "")
        lines = [f"{e.get('field')}: {e.get('message')}" for e in self.field_errors]
        # The detail often already reads "field: message"; repeat only what it does not say.
        notes: list[str] = []
        if status == 401:
            notes.append(NOT_LOGGED_IN)
            if token_source:
                notes.append(f"(the token sent came from {token_source})")
        super().__init__(message, [line for line in lines if line not in detail], notes=notes)

    @property
    def field_errors(self) -> list[dict[str, Any]]:
        errors = self.problem.get("errors") or []
        return [e for e in errors if isinstance(e, dict)]


def ref_path(ref: str | int) -> str:
    """One path segment for an id or name, escaped."""
    return quote(str(ref), safe="")


def server_key(url: str) -> str:
    """How a server is named in the credentials file: its base URL without a trailing slash."""
    return url.strip().rstrip("/")


# ---------------------------------------------------------------- stored credentials


def config_dir() -> Path:
    """The client's configuration directory: ARMILLARY_CONFIG_DIR, else the platform's user config dir."""
    override = os.environ.get(CONFIG_DIR_ENV)
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("armillary", appauthor=False))


class CredentialStore:
    """The tokens ``armillary login`` keeps, one per server base URL, in ``credentials.json``.

    The file holds secrets: it is written whole to a new file created with mode 0600 and renamed
    over the old one (so a crash never leaves half a file, and an old file with looser permissions
    is replaced), in a directory created with mode 0700.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or config_dir() / "credentials.json"

    def load(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"servers": {}}
        except OSError as exc:
            raise CliError(f"cannot read the credentials file {self.path}: {exc.strerror or exc}") from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("servers", {}), dict):
            raise CliError(
                f"the credentials file {self.path} is damaged (not the JSON armillary writes)",
                [f"delete it and log in again: rm {self.path} && armillary login"],
            )
        data.setdefault("servers", {})
        return data

    def get(self, url: str) -> dict[str, Any] | None:
        entry = self.load()["servers"].get(server_key(url))
        return entry if isinstance(entry, dict) and entry.get("token") else None

    def put(self, url: str, entry: dict[str, Any]) -> None:
        data = self.load()
        data["servers"][server_key(url)] = entry
        self._write(data)

    def remove(self, url: str) -> dict[str, Any] | None:
        """Forget the server's credentials; return what was stored (None: nothing was)."""
        data = self.load()
        entry = data["servers"].pop(server_key(url), None)
        if entry is not None:
            self._write(data)
        return entry

    def _write(self, data: dict[str, Any]) -> None:
        directory = self.path.parent
        try:
            if not directory.is_dir():
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.chmod(directory, 0o700)  # mkdir's mode is masked by the umask
            fd, temp = tempfile.mkstemp(dir=directory, prefix=".credentials.", suffix=".tmp")  # mode 0600
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(data, out, indent=2, sort_keys=True)
                    out.write("\n")
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(temp, 0o600)
                os.replace(temp, self.path)
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise CliError(f"cannot write the credentials file {self.path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- the client


@dataclass
class ApiClient:
    """A thin client of ``/api/v1``: JSON in and out, problems raised as :class:`ApiError`.

    ``token`` (when set) goes with every request as a bearer token; ``token_source`` says where it
    came from, for the hint printed with a 401.
    """

    base_url: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    token: str | None = field(default=None, repr=False)
    token_source: str | None = None
    _http: httpx.Client | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise CliError(f"--server must be an http:// or https:// URL, not {self.base_url!r}", exit_code=2)

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            headers = {
                "X-Request-ID": self.request_id,
                "User-Agent": f"armillary-cli/{__version__}",
                "Accept": "application/json, application/problem+json",
            }
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            self._http = httpx.Client(
                base_url=self.base_url + API_PREFIX, timeout=TIMEOUT, headers=headers, follow_redirects=False
            )
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # ------------------------------------------------------------ requests

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; return the response when it succeeded, raise otherwise."""
        headers = dict(headers or {})
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self.http.request(
                method, path, json=json, content=content, params=params, headers=headers
            )
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot connect to the Armillary server at {self.base_url}: {transport_reason(exc)}",
                [
                    f"is `armillary serve` running there? Point the client elsewhere with --server URL or {URL_ENV}."
                ],
            ) from None
        except httpx.TimeoutException:
            raise CliError(
                f"the Armillary server at {self.base_url} did not answer in time ({method} {path})"
            ) from None
        except httpx.TransportError as exc:
            raise CliError(
                f"talking to the Armillary server at {self.base_url} failed: {transport_reason(exc)}"
            ) from None
        if response.status_code >= 400:
            raise ApiError(response.status_code, problem_of(response), self.request_id, self.token_source)
        return response

    def get(self, path: str, params: Any = None) -> httpx.Response:
        return self.request("GET", path, params=params)

    def get_json(self, path: str, params: Any = None) -> Any:
        return self.get(path, params=params).json()

    def post_json(self, path: str, body: Any) -> Any:
        return _body(self.request("POST", path, json=body))

    def patch_json(self, path: str, body: Any, etag: str | None = None) -> Any:
        headers = {"If-Match": etag} if etag else None
        return _body(self.request("PATCH", path, json=body, headers=headers))

    def send_document(self, method: str, path: str, document: Document) -> Any:
        """Send a file's bytes untouched, labelled as YAML or JSON (the API accepts both)."""
        return _body(self.request(method, path, content=document.raw, content_type=document.content_type))

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def pages(
        self, path: str, params: list[tuple[str, str]], limit: int, follow: bool
    ) -> Iterator[dict[str, Any]]:
        """Yield each page of a keyset-paginated list; follow ``next`` only when asked to."""
        page = self.get_json(path, params=[*params, ("limit", str(limit))])
        yield page
        while follow and page.get("next"):
            # ``next`` is an absolute URL built from the Host the server saw, which a proxy may have
            # rewritten: ask the server we were given for the same path with ``next``'s query.
            page = self.get_json(path, params=httpx.URL(str(page["next"])).params)
            yield page


@dataclass
class Document:
    """A file given with ``--file``: its bytes as read, and how to label them."""

    name: str
    raw: bytes

    @property
    def content_type(self) -> str:
        return "application/json" if self.name.lower().endswith(".json") else "application/yaml"


def transport_reason(exc: Exception) -> str:
    """Why a request could not be made, in a few words (``connection refused``)."""
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower() or "Errno 111" in text:
        return "connection refused"
    return text


def problem_of(response: httpx.Response) -> dict[str, Any]:
    """The response's problem+json body, or a stand-in made of its status and text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        return body
    text = response.text.strip().replace("\n", " ")
    return {
        "title": response.reason_phrase or f"HTTP {response.status_code}",
        "status": response.status_code,
        "detail": (text[:300] + "…") if len(text) > 300 else text,
    }


def _body(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    return response.json()

"""Serves the built web console (``ui/``, built into ``web/static`` by ``scripts/bootstrap``) at ``/``.

The console is a client of the public API only; this package just hands out its files:

- ``/assets/*``: Vite's content-hashed files, cached for a year (a new build has new names), gzipped for
  clients that take it (the initial JavaScript is ~150 KB so, ~480 KB plain);
- ``/`` and every client route (``/systems/12``...): ``index.html``, never cached, so a new build is seen
  at once (``/`` asked by an API client, without ``text/html`` in Accept, still redirects to ``/docs``). Client routes are served by a fallback: a browser's GET (``Accept: text/html``) that the
  server has no route for gets ``index.html`` instead of a 404; API paths keep their problem+json 404.
- without a build, ``/`` answers a page saying how to build the console (the API works regardless).

No Node at run time: the files are plain static files shipped in the wheel (package data).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
INDEX_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
ASSET_CACHE = "public, max-age=31536000, immutable"
# Paths the fallback never answers: the server's own (their 404s stay problem+json).
SERVER_PREFIXES = ("/api/", "/docs", "/healthz", "/readyz", "/metrics", "/assets/")

NOT_BUILT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Armillary</title></head>
<body><main><h1>Armillary</h1>
<p>The web console is not built on this server. Build it (Node.js and npm are needed to build, not to run):</p>
<pre>scripts/bootstrap          # or: cd ui &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>The API works without it: <a href="/docs">/docs</a> (Swagger UI), <code>/api/v1</code>, and the
<code>armillary</code> command.</p></main></body></html>"""


def built(static: Path = STATIC) -> bool:
    return (static / "index.html").is_file()


class ImmutableAssets(StaticFiles):
    """Hashed build output: cache it for a year."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = ASSET_CACHE
        return response


def index_response(static: Path = STATIC) -> Response:
    if built(static):
        return FileResponse(static / "index.html", headers=INDEX_HEADERS, media_type="text/html")
    return HTMLResponse(NOT_BUILT, headers=INDEX_HEADERS)


class ClientRoutes:
    """ASGI middleware: a browser's GET the server has no route for (404) gets ``index.html``, so the
    console's own routes (``/systems?state=ready``, ``/jobs/7``) load from a bookmark or a reload."""

    def __init__(self, app: ASGIApp, static: Path = STATIC) -> None:
        self.app = app
        self.static = static

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not _wants_html(scope) \
                or scope["path"].startswith(SERVER_PREFIXES):
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_404(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 404:
                held.append(message)
                return
            if held:  # the 404's body: dropped, index.html answers instead
                return
            await send(message)

        await self.app(scope, receive, hold_404)
        if held:
            await index_response(self.static)(scope, receive, send)


def _wants_html(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"accept":
            return b"text/html" in value
    return False


def install(app: FastAPI, static: Path = STATIC) -> None:
    """Serve the console from ``app``: ``/``, ``/assets``, and the client-route fallback."""

    @app.get("/", include_in_schema=False)
    def root(request: Request) -> Response:
        # A browser gets the console; an API client (curl, httpx: no text/html) the API's documentation.
        if "text/html" not in request.headers.get("accept", ""):
            return RedirectResponse("/docs")
        return index_response(static)

    if (static / "assets").is_dir():
        assets = GZipMiddleware(ImmutableAssets(directory=static / "assets"), minimum_size=1024)
        app.mount("/assets", assets, name="web-assets")
    app.add_middleware(ClientRoutes, static=static)

"""The web console: static files shipped in the package, served at ``/``.

The console is a client of the management API (``/api/...``) and nothing else: no server
rendering, no templates, no build step. ``/`` answers ``index.html``; ``/console/...`` the
ES modules, the stylesheet and the vendored Preact+htm file. A strict Content-Security-Policy
(scripts and styles only from this origin, no inline script) limits what an injected string
could do, and the files are sent with ``no-cache`` so an upgrade is picked up on the next load.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


def _file(path: Path) -> web.FileResponse:
    response = web.FileResponse(path, headers=HEADERS)
    response.content_type = TYPES.get(path.suffix, "application/octet-stream")
    return response


async def index(request: web.Request) -> web.StreamResponse:
    return _file(STATIC / "index.html")


async def asset(request: web.Request) -> web.StreamResponse:
    """One file under ``static/``; anything that would leave the folder is a 404."""
    name = request.match_info["name"]
    path = (STATIC / name).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
        raise web.HTTPNotFound(text="not found")
    return _file(path)


def add_console_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/console/{name:.+}", asset)

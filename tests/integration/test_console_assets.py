"""The console's files as the server sends them: from the package, with a strict CSP, and
nothing outside the static folder."""

from __future__ import annotations

import re

from relaygate.console import STATIC


async def test_index_and_modules_are_served_with_a_strict_csp(relay):
    resp = await relay.get("/")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
    html = await resp.text()
    for src in re.findall(r'(?:src|href)="(/console/[^"]+)"', html):
        asset = await relay.get(src)
        assert asset.status == 200, src
    app = await relay.get("/console/app.js")
    assert app.content_type == "text/javascript"
    assert app.headers["X-Content-Type-Options"] == "nosniff"


async def test_every_module_import_resolves():
    """Each relative import of each module names a file that ships (no build step)."""
    for path in STATIC.rglob("*.js"):
        if "vendor" in path.parts:
            continue
        for name in re.findall(r'from "(\.[^"]+)"', path.read_text()):
            assert (path.parent / name).resolve().is_file(), f"{path.name}: {name}"


async def test_nothing_outside_the_static_folder(relay):
    for path in ("/console/../__init__.py", "/console/%2e%2e/__init__.py", "/console/nope.js"):
        resp = await relay.get(path)
        assert resp.status == 404, path

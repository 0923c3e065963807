"""The OpenAPI 3.1 document of the management API, served at ``/api/openapi.json``.

Written by hand (as a dict, so that shared pieces are named once) rather than generated:
it states the contract, including New API's quirks (HTTP 200 business errors, the ``code``
envelope of ``/api/usage/token/``, ``time`` beside the envelope of a channel test). A test
checks that it lists exactly the registered routes, and a property test checks responses
against it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relaygate.api.auth import Level
from relaygate.api.envelope import raw_json
from relaygate.api.openapi.paths import PATHS
from relaygate.api.openapi.schemas import SCHEMAS
from relaygate.api.routing import Ctx, RouteTable

routes = RouteTable()

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "relaygate management API (New API-compatible)",
        "version": "1",
        "description": (
            "Envelope {success, message, data}; business errors are HTTP 200 with "
            "success:false. Authenticate with 'Authorization: Bearer <access token>' plus "
            "'New-Api-User: <your user id>'. Quota units: 500000 = $1; 1 credit = 2500."
        ),
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "accessToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "system access token (GET /api/user/token)",
            },
            "newApiUser": {
                "type": "apiKey",
                "in": "header",
                "name": "New-Api-User",
                "description": "the numeric id of the access token's owner",
            },
            "skKey": {"type": "http", "scheme": "bearer", "description": "an sk- token key"},
        },
    },
}


@routes.route("GET", "/api/openapi.json", Level.PUBLIC)
async def openapi_document(ctx: Ctx) -> web.StreamResponse:
    return raw_json(DOCUMENT)

"""Helpers for the management API tests: users of each role and an authenticated client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relaygate.admin import ROLE_ADMIN, ROLE_ROOT, ROLE_USER


@dataclass
class ApiUser:
    id: int
    access: str
    role: int

    def headers(self, user_header: str | None = None) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.access}",
            "New-Api-User": str(self.id) if user_header is None else user_header,
        }


class Api:
    """Calls the in-process app as one user; returns (status, json body)."""

    def __init__(self, client: Any, user: ApiUser) -> None:
        self.client = client
        self.user = user

    async def call(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        headers = {**self.user.headers(), **kw.pop("headers", {})}
        resp = await self.client.request(method, path, json=body, headers=headers, **kw)
        return resp.status, await resp.json()

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        status, data = await self.call(method, path, body, **kw)
        assert status == 200, data
        assert data["success"] is True, data
        return data.get("data")

    async def refused(self, method: str, path: str, body: Any = None, **kw: Any) -> str:
        status, data = await self.call(method, path, body, **kw)
        assert status == 200, data
        assert data["success"] is False, data
        assert isinstance(data["message"], str) and data["message"]
        return str(data["message"])


async def make_user(env: Any, name: str, role: int = ROLE_USER, quota: int = 10**12) -> ApiUser:
    uid, access = await env.admin.create_user(name, role, quota)
    return ApiUser(uid, access, role)


async def three_users(env: Any) -> tuple[ApiUser, ApiUser, ApiUser]:
    root = await make_user(env, "root", ROLE_ROOT)
    admin = await make_user(env, "admin", ROLE_ADMIN)
    user = await make_user(env, "alice", ROLE_USER)
    return root, admin, user

"""``relaygate dev``: one command from a fresh clone to a working relay.

Starts (or reuses) Redis and PostgreSQL, migrates, seeds a root user, an access token, a
demo ``sk-`` token and a mock-upstream channel, then serves relay + flusher + mock upstream
and prints ready-to-paste examples. Seeding is idempotent: the demo credentials are kept in
``.relaygate/dev-credentials.json`` (mode 0600, git-ignored) so a second run prints the same
ones. That file exists only for local development; production never stores a key in clear.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from relaygate.config import Settings
from relaygate.dev.clean import data_dir, record

DEMO_USER = "root"
DEMO_CHANNEL = "dev-mock-upstream"
DEMO_TOKEN = "demo"
DEMO_MODELS = "gpt-4o-mini,gpt-4o,gpt-3.5-turbo,text-embedding-3-small"
DEMO_USER_QUOTA = 500_000 * 1000  # $1000
DEMO_TOKEN_QUOTA = 500_000 * 100  # $100


def prepare_services(settings: Settings, log: Any = print) -> Settings:
    """Reuse reachable Redis/PostgreSQL or start our own; create the database; migrate."""
    from relaygate.dev.services import ensure_database, ensure_postgres, ensure_redis

    folder = data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    redis_url = ensure_redis(settings.redis_url, folder, log)
    database_url = ensure_postgres(settings.database_url, folder, log)
    created = ensure_database(database_url, log)
    # What make clean may drop later: only a database this made (relaygate.dev.clean).
    record(folder, database_url, created, redis_url, settings.key_prefix)
    return settings.replace(redis_url=redis_url, database_url=database_url)


async def seed(settings: Settings, mock_port: int) -> dict[str, Any]:
    """Create the demo objects once; return the credentials to print."""
    from relaygate.accounts import Accounts
    from relaygate.admin import ROLE_ROOT, Admin
    from relaygate.app import redis_client
    from relaygate.credentials import hash_secret
    from relaygate.keys import KeyScheme
    from relaygate.ledger import Scripts
    from relaygate.store.db import create_pool, migrate

    conn = await asyncpg.connect(settings.database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    pool = await create_pool(settings.database_url, max_size=2)
    redis = redis_client(settings)
    creds_path = data_dir() / "dev-credentials.json"
    try:
        admin = Admin(
            pool,
            Accounts(pool, redis, Scripts.load(), KeyScheme(settings.key_prefix, settings.shards)),
            allow_loopback_upstreams=settings.allow_loopback_upstreams,
        )
        creds: dict[str, Any] = {}
        if creds_path.exists():
            creds = orjson.loads(creds_path.read_bytes())
        async with pool.acquire() as c:
            user = await c.fetchrow(
                "SELECT id, access_token_hash FROM users WHERE username = $1 AND deleted_at IS NULL",
                DEMO_USER,
            )
            if user is None:
                user_id, access = await admin.create_user(DEMO_USER, ROLE_ROOT, DEMO_USER_QUOTA)
            else:
                user_id = int(user["id"])
                access = creds.get("access_token", "")
                if not access or hash_secret(access) != user["access_token_hash"]:
                    access = await admin.rotate_access_token(user_id)
            base_url = f"http://127.0.0.1:{mock_port}"
            channel = await c.fetchrow(
                "SELECT id, base_url FROM channels WHERE name = $1 AND deleted_at IS NULL",
                DEMO_CHANNEL,
            )
            if channel is None:
                await admin.create_channel(DEMO_CHANNEL, base_url, "mock-upstream-key", DEMO_MODELS)
            elif channel["base_url"] != base_url:
                await c.execute(
                    "UPDATE channels SET base_url = $2 WHERE id = $1", channel["id"], base_url
                )
            key = creds.get("demo_key", "")
            token_ok = False
            if key.startswith("sk-"):
                token_ok = bool(
                    await c.fetchval(
                        "SELECT 1 FROM tokens WHERE key_hash = $1 AND deleted_at IS NULL",
                        hash_secret(key[3:]),
                    )
                )
            if not token_ok:
                created = await admin.create_token(
                    user_id, DEMO_TOKEN, remain_quota=DEMO_TOKEN_QUOTA
                )
                key = f"sk-{created.key}"
        creds = {"user_id": user_id, "access_token": access, "demo_key": key}
        creds_path.write_bytes(orjson.dumps(creds, option=orjson.OPT_INDENT_2))
        creds_path.chmod(0o600)
        return creds
    finally:
        await pool.close()
        await redis.aclose()


def banner(settings: Settings, creds: dict[str, Any]) -> str:
    base = f"http://{settings.host}:{settings.port}"
    key = creds["demo_key"]
    return f"""
relaygate is ready on {base}  (relay + flusher + mock upstream; Ctrl-C to stop)

Chat completion with curl:

  curl {base}/v1/chat/completions \\
    -H "Authorization: Bearer {key}" \\
    -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello"}}]}}'

OpenAI Python SDK (pip install openai):

  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="{key}")
  r = client.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "Hello"}}])
  print(r.choices[0].message.content, r.usage)
  for chunk in client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                              messages=[{{"role": "user", "content": "Hello"}}]):
      print(chunk.choices[0].delta.content or "" if chunk.choices else "", end="")

Management API (New API-compatible), user id {creds["user_id"]}:

  curl {base}/api/token/?p=1 -H "Authorization: Bearer {creds["access_token"]}" -H "New-Api-User: {creds["user_id"]}"

Credentials are kept in {data_dir() / "dev-credentials.json"}.
"""


def run_dev(settings: Settings, mock_port: int, serve: bool) -> None:
    from relaygate.serving import Fatal, run, serve_app

    try:
        settings = prepare_services(settings)
    except Exception as exc:
        raise Fatal(f"could not prepare Redis/PostgreSQL: {exc}") from None
    # The demo channel is the mock upstream on 127.0.0.1: loopback upstreams are allowed
    # here, and only here (docs/security.md).
    settings = settings.replace(allow_loopback_upstreams=True)
    creds = run(seed(settings, mock_port))
    settings = settings.replace(with_worker=True)
    if not serve:
        print(banner(settings, creds))
        return

    async def main() -> None:
        from aiohttp import web

        from relaygate.dev.mock import MockConfig, build_app

        mock = web.AppRunner(build_app(MockConfig()), access_log=None)
        await mock.setup()
        await web.TCPSite(mock, "127.0.0.1", mock_port).start()

        async def announce() -> None:
            print(banner(settings, creds), flush=True)

        try:
            await serve_app(settings, extra=announce)
        finally:
            await mock.cleanup()

    run(main())

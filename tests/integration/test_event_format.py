"""Stream entries the flusher reads: today's format, the earlier one-field-per-attribute
format (entries left by an older relay during an upgrade), and malformed ones."""

from __future__ import annotations

from relaygate import events

from .helpers import flush_all


async def test_flusher_records_both_formats_and_dead_letters_the_rest(env):
    uid, _ = await env.root_user()
    tok = await env.admin.create_token(uid, "t", remain_quota=10**6)
    stream = env.keys.stream_of_user(uid)
    now = 1_790_000_000
    current = {
        "rid": "r-new",
        "ts": now,
        "user": uid,
        "token": tok.id,
        "tname": "t",
        "uname": "root",
        "model": "gpt-4o-mini",
        "chan": 0,
        "group": "default",
        "pt": 10,
        "ct": 20,
        "stream": 1,
        "lat": 5,
        "ip": "10.0.0.1",
        "other": '{"estimated":true}',
    }
    await env.redis.xadd(stream, {"quota": 7, "event": events.encode(current)})
    legacy = {
        "quota": 11,
        "rid": "r-old",
        "ts": now,
        "user": uid,
        "token": tok.id,
        "tname": "t",
        "uname": "root",
        "model": "gpt-4o",
        "chan": 0,
        "group": "default",
        "pt": 1,
        "ct": 2,
        "stream": 0,
        "lat": 3,
        "ip": "",
        "other": "{}",
    }
    await env.redis.xadd(stream, legacy)
    await env.redis.xadd(stream, {"quota": 1, "event": b"[1, 2]"})
    await env.redis.xadd(stream, {"quota": 1, "event": events.encode({"rid": "no-user"})})

    assert await flush_all(env) == 2
    async with env.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT request_id, quota, model_name, prompt_tokens, completion_tokens, is_stream,"
            " ip, content FROM logs ORDER BY request_id"
        )
        used = await conn.fetchval("SELECT used_quota FROM tokens WHERE id = $1", tok.id)
    assert [tuple(r) for r in rows] == [
        (
            "r-new",
            7,
            "gpt-4o-mini",
            10,
            20,
            True,
            "10.0.0.1",
            "usage estimated: upstream reported none",
        ),
        ("r-old", 11, "gpt-4o", 1, 2, False, "", ""),
    ]
    assert used == 18
    assert await env.redis.xlen(f"{stream}:dead") == 2

"""SQL of the management API. Every value goes through a $n parameter; the only text ever
spliced into a statement is a fixed column expression chosen by code (``Where``)."""

from __future__ import annotations

from typing import Any

USER_BY_ACCESS_TOKEN = """
SELECT id, username, role, status, "group" FROM users
WHERE access_token_hash = $1 AND deleted_at IS NULL
"""

USER_AUTH_BY_ID = """
SELECT id, username, role, status, "group" FROM users WHERE id = $1 AND deleted_at IS NULL
"""

USER_LOGIN = """
SELECT id, username, display_name, role, status, "group", password_hash FROM users
WHERE username = $1 AND deleted_at IS NULL
"""

USER_PASSWORD_HASH = "SELECT password_hash FROM users WHERE id = $1 AND deleted_at IS NULL"

# --- tokens ----------------------------------------------------------------------------------

TOKEN_COLUMNS = """
id, user_id, key_mask, status, name, created_time, accessed_time, expired_time, quota_limit,
used_quota, unlimited_quota, model_limits_enabled, model_limits, allow_ips, "group",
daily_quota, monthly_quota
"""

TOKENS_OF_USER = f"""
SELECT {TOKEN_COLUMNS} FROM tokens
WHERE user_id = $1 AND deleted_at IS NULL
ORDER BY id DESC LIMIT $2 OFFSET $3
"""

COUNT_TOKENS_OF_USER = "SELECT count(*) FROM tokens WHERE user_id = $1 AND deleted_at IS NULL"

TOKEN_OF_USER = f"""
SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL
"""

# $2 name LIKE pattern (escape !) or NULL, $3 key hash or NULL
_TOKEN_SEARCH_WHERE = """
WHERE user_id = $1 AND deleted_at IS NULL
  AND ($2::text IS NULL OR name LIKE $2 ESCAPE '!')
  AND ($3::bytea IS NULL OR key_hash = $3)
"""

SEARCH_TOKENS = f"""
SELECT {TOKEN_COLUMNS} FROM tokens {_TOKEN_SEARCH_WHERE}
ORDER BY id DESC LIMIT $4 OFFSET $5
"""

COUNT_SEARCH_TOKENS = f"SELECT count(*) FROM tokens {_TOKEN_SEARCH_WHERE}"

TOKEN_BY_KEY_HASH = f"""
SELECT {TOKEN_COLUMNS}, (SELECT status FROM users u WHERE u.id = t.user_id
                         AND u.deleted_at IS NULL) AS user_status
FROM tokens t WHERE key_hash = $1 AND deleted_at IS NULL
"""

OWNED_TOKEN_IDS = """
SELECT id FROM tokens WHERE id = ANY($1::bigint[]) AND user_id = $2 AND deleted_at IS NULL
"""

# --- users -----------------------------------------------------------------------------------

USER_COLUMNS = """
id, username, display_name, role, status, email, "group", quota_limit, used_quota,
request_count, remark, created_at
"""

USER_BY_ID = f"SELECT {USER_COLUMNS} FROM users WHERE id = $1 AND deleted_at IS NULL"

USERS_PAGE = f"""
SELECT {USER_COLUMNS} FROM users WHERE deleted_at IS NULL ORDER BY id DESC LIMIT $1 OFFSET $2
"""

COUNT_USERS = "SELECT count(*) FROM users WHERE deleted_at IS NULL"

# $1 LIKE pattern over username/display_name/email or NULL, $2 exact id or NULL,
# $3 group or NULL, $4 role or NULL, $5 status or NULL
_USER_SEARCH_WHERE = """
WHERE deleted_at IS NULL
  AND ($1::text IS NULL OR username LIKE $1 ESCAPE '!' OR display_name LIKE $1 ESCAPE '!'
       OR email LIKE $1 ESCAPE '!' OR id = $2::bigint)
  AND ($3::text IS NULL OR "group" = $3)
  AND ($4::int IS NULL OR role = $4)
  AND ($5::int IS NULL OR status = $5)
"""

SEARCH_USERS = f"""
SELECT {USER_COLUMNS} FROM users {_USER_SEARCH_WHERE} ORDER BY id DESC LIMIT $6 OFFSET $7
"""

COUNT_SEARCH_USERS = f"SELECT count(*) FROM users {_USER_SEARCH_WHERE}"

# --- channels --------------------------------------------------------------------------------

# Never the key: it is write-only through the API.
CHANNEL_COLUMNS = """
id, type, name, base_url, models, "group", priority, weight, status, model_mapping,
test_model, created_time, test_time, response_time, used_quota, other
"""

# $1 status or NULL, $2 type or NULL, $3 group or NULL, $4 LIKE pattern (name/base_url) or
# NULL, $5 exact id or NULL, $6 model or NULL
_CHANNEL_WHERE = """
WHERE deleted_at IS NULL
  AND ($1::int IS NULL OR status = $1)
  AND ($2::int IS NULL OR type = $2)
  AND ($3::text IS NULL OR $3 = ANY(string_to_array("group", ',')))
  AND ($4::text IS NULL OR name LIKE $4 ESCAPE '!' OR base_url LIKE $4 ESCAPE '!'
       OR id = $5::bigint)
  AND ($6::text IS NULL OR $6 = ANY(string_to_array(models, ',')))
"""

CHANNELS_PAGE = f"""
SELECT {CHANNEL_COLUMNS} FROM channels {_CHANNEL_WHERE}
ORDER BY priority DESC, id DESC LIMIT $7 OFFSET $8
"""

COUNT_CHANNELS = f"SELECT count(*) FROM channels {_CHANNEL_WHERE}"

CHANNEL_TYPE_COUNTS = """
SELECT type, count(*) AS n FROM channels WHERE deleted_at IS NULL GROUP BY type
"""

CHANNEL_BY_ID = f"SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = $1 AND deleted_at IS NULL"

CHANNEL_FOR_TEST = """
SELECT id, type, name, key, base_url, models, "group", priority, weight, model_mapping,
       test_model, other
FROM channels WHERE id = $1 AND deleted_at IS NULL
"""

CHANNELS_FOR_TEST_ALL = """
SELECT id, type, name, key, base_url, models, "group", priority, weight, model_mapping,
       test_model
FROM channels WHERE status = 1 AND deleted_at IS NULL ORDER BY id
"""

DISABLED_CHANNEL_IDS = "SELECT id FROM channels WHERE status <> 1 AND deleted_at IS NULL"

# --- logs ------------------------------------------------------------------------------------

LOG_COLUMNS = """
l.id, l.user_id, l.created_at, l.type, l.content, l.username, l.token_name, l.model_name,
l.quota, l.prompt_tokens, l.completion_tokens, l.use_time_ms, l.is_stream, l.channel_id,
l.token_id, l."group", l.ip, l.request_id, l.other
"""

LOG_COUNT_CAP = 10_000


class Where:
    """AND-ed conditions with numbered parameters, built only from fixed expressions."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.args: list[Any] = []

    def add(self, expr: str, *values: Any) -> None:
        """``expr`` uses ``{}`` for each value's placeholder, e.g. ``"l.type = {}"``."""
        marks = []
        for value in values:
            self.args.append(value)
            marks.append(f"${len(self.args)}")
        self.parts.append(expr.format(*marks))

    def sql(self) -> str:
        return " AND ".join(self.parts) if self.parts else "TRUE"

    def next_mark(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"


def logs_page(
    where: Where, limit: int, offset: int, with_channel_name: bool
) -> tuple[str, list[Any]]:
    join = "LEFT JOIN channels c ON c.id = l.channel_id" if with_channel_name else ""
    name = "COALESCE(c.name, '')" if with_channel_name else "''"
    cond = where.sql()
    lim = where.next_mark(limit)
    off = where.next_mark(offset)
    sql = (
        f"SELECT {LOG_COLUMNS}, {name} AS channel_name FROM logs l {join} WHERE {cond}"
        f" ORDER BY l.created_at DESC, l.id DESC LIMIT {lim} OFFSET {off}"
    )
    return sql, where.args


def logs_count(where: Where) -> tuple[str, list[Any]]:
    cap = where.next_mark(LOG_COUNT_CAP)
    return (
        f"SELECT count(*) FROM (SELECT 1 FROM logs l WHERE {where.sql()} LIMIT {cap}) s",
        where.args,
    )


def logs_quota_sum(where: Where) -> tuple[str, list[Any]]:
    return f"SELECT COALESCE(sum(l.quota), 0) FROM logs l WHERE {where.sql()}", where.args


def logs_rate(where: Where) -> tuple[str, list[Any]]:
    return (
        "SELECT count(*) AS rpm, COALESCE(sum(l.prompt_tokens + l.completion_tokens), 0) AS tpm"
        f" FROM logs l WHERE {where.sql()}",
        where.args,
    )


TOKEN_RECENT_LOGS = f"""
SELECT {LOG_COLUMNS}, '' AS channel_name FROM logs l
WHERE l.token_id = $1 AND l.user_id = $2
ORDER BY l.created_at DESC, l.id DESC LIMIT $3
"""

# --- usage charts (New API's quota_data, derived from logs) --------------------------------

QUOTA_DATA_ALL = """
SELECT 0 AS user_id, '' AS username, model_name, (created_at / 3600) * 3600 AS created_at,
       count(*) AS count, COALESCE(sum(quota), 0) AS quota,
       COALESCE(sum(prompt_tokens + completion_tokens), 0) AS token_used
FROM logs
WHERE type = 2 AND created_at >= $1 AND created_at <= $2
GROUP BY model_name, (created_at / 3600) * 3600
ORDER BY 4, 3
"""

QUOTA_DATA_OF_USER = """
SELECT user_id, max(username) AS username, model_name,
       (created_at / 3600) * 3600 AS created_at,
       count(*) AS count, COALESCE(sum(quota), 0) AS quota,
       COALESCE(sum(prompt_tokens + completion_tokens), 0) AS token_used
FROM logs
WHERE type = 2 AND user_id = $1 AND created_at >= $2 AND created_at <= $3
GROUP BY user_id, model_name, (created_at / 3600) * 3600
ORDER BY 4, 3
"""

QUOTA_DATA_OF_USERNAME = """
SELECT user_id, max(username) AS username, model_name,
       (created_at / 3600) * 3600 AS created_at,
       count(*) AS count, COALESCE(sum(quota), 0) AS quota,
       COALESCE(sum(prompt_tokens + completion_tokens), 0) AS token_used
FROM logs
WHERE type = 2 AND username = $1 AND created_at >= $2 AND created_at <= $3
GROUP BY user_id, model_name, (created_at / 3600) * 3600
ORDER BY 4, 3
"""

OPTIONS_ALL = "SELECT key, value FROM options ORDER BY key"

# --- operator quota view ---------------------------------------------------------------------

# $1 window start (unix s), $2 limit. Spend comes from the flushed consume logs (type 2).
TOKENS_BY_SPEND = """
SELECT t.id, t.user_id, t.key_mask, t.status, t.name, t.created_time, t.accessed_time,
       t.expired_time, t.quota_limit, t.used_quota, t.unlimited_quota, t.model_limits_enabled,
       t.model_limits, t.allow_ips, t."group", t.daily_quota, t.monthly_quota,
       u.username, s.requests, s.spent
FROM (
    SELECT token_id, count(*) AS requests, sum(quota) AS spent FROM logs
    WHERE type = 2 AND created_at >= $1 GROUP BY token_id ORDER BY spent DESC LIMIT $2
) s
JOIN tokens t ON t.id = s.token_id AND t.deleted_at IS NULL
JOIN users u ON u.id = t.user_id
ORDER BY s.spent DESC, t.id
"""

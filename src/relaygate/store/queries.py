"""Named SQL used by more than one module. Every value goes through a $n parameter."""

from __future__ import annotations

TOKEN_META_COLUMNS = """
    t.id, t.user_id, t.name, t.status, t.expired_time, t.quota_limit, t.used_quota,
    t.unlimited_quota, t.model_limits_enabled, t.model_limits, t.allow_ips, t."group",
    t.daily_quota, t.monthly_quota, t.ver, t.deleted_at,
    u.username, u.role, u.status AS user_status, u."group" AS user_group, u.deleted_at AS user_deleted_at
"""

TOKEN_META_BY_HASH = f"""
SELECT {TOKEN_META_COLUMNS}
FROM tokens t JOIN users u ON u.id = t.user_id
WHERE t.key_hash = $1
"""

TOKEN_META_BY_ID = f"""
SELECT {TOKEN_META_COLUMNS}
FROM tokens t JOIN users u ON u.id = t.user_id
WHERE t.id = $1
"""

TOKEN_LEDGER_ROW = """
SELECT id, user_id, status, expired_time, quota_limit, used_quota, unlimited_quota,
       daily_quota, monthly_quota, ver, deleted_at
FROM tokens WHERE id = $1
"""

USER_LEDGER_ROW = """
SELECT id, status, quota_limit, used_quota, ver, deleted_at FROM users WHERE id = $1
"""

LOGS_PRESENT = """
SELECT request_id FROM logs
WHERE (request_id, created_at) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))
"""

CHANNELS_ENABLED = """
SELECT id, type, name, key, base_url, models, "group", priority, weight, model_mapping
FROM channels WHERE deleted_at IS NULL AND status = 1
"""

OPTIONS_ALL = "SELECT key, value FROM options"

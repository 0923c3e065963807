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
SELECT id, type, name, key, base_url, models, "group", priority, weight, model_mapping, other
FROM channels WHERE deleted_at IS NULL AND status = 1
"""

OPTIONS_ALL = "SELECT key, value FROM options"

# --- ledger outbox (migration 0004): committed writes still to be pushed to Redis ---------

OUTBOX_ADD = """
INSERT INTO ledger_outbox (kind, id, user_id, ver) VALUES ($1, $2, $3, $4)
ON CONFLICT (kind, id) DO UPDATE SET ver = GREATEST(ledger_outbox.ver, EXCLUDED.ver)
"""

# Only up to the version that was pushed: a write committed meanwhile keeps its row.
OUTBOX_DONE = "DELETE FROM ledger_outbox WHERE kind = $1 AND id = $2 AND ver <= $3"

OUTBOX_DROP = "DELETE FROM ledger_outbox WHERE kind = $1 AND id = $2"

OUTBOX_DUE = "SELECT kind, id FROM ledger_outbox ORDER BY created_at, kind, id LIMIT $1"

QUOTA_OP_CLAIM = """
INSERT INTO quota_operations (op_id, user_id, delta) VALUES ($1, $2, $3)
ON CONFLICT (op_id) DO NOTHING RETURNING op_id
"""

QUOTA_OP_BY_ID = "SELECT user_id, delta FROM quota_operations WHERE op_id = $1"

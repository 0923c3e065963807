-- Core schema: users, tokens, channels, options.
-- Quota model (DESIGN.md "The ledger"): quota_limit is the total ever granted and is
-- authoritative here; used_quota is the total consumed as flushed from the Redis ledger.
-- remain = quota_limit - used_quota (live figures come from Redis).

CREATE TABLE users (
    id                BIGSERIAL PRIMARY KEY,
    username          TEXT NOT NULL,
    display_name      TEXT NOT NULL DEFAULT '',
    password_hash     TEXT NOT NULL DEFAULT '',
    role              INT NOT NULL DEFAULT 1,
    status            INT NOT NULL DEFAULT 1,
    email             TEXT NOT NULL DEFAULT '',
    "group"           TEXT NOT NULL DEFAULT 'default',
    quota_limit       BIGINT NOT NULL DEFAULT 0,
    used_quota        BIGINT NOT NULL DEFAULT 0,
    request_count     BIGINT NOT NULL DEFAULT 0,
    access_token_hash BYTEA,
    remark            TEXT NOT NULL DEFAULT '',
    ver               BIGINT NOT NULL DEFAULT 1,
    created_at        BIGINT NOT NULL DEFAULT EXTRACT(EPOCH FROM now())::BIGINT,
    deleted_at        BIGINT
);
CREATE UNIQUE INDEX users_username_live ON users (username) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX users_access_token_hash ON users (access_token_hash);

CREATE TABLE tokens (
    id                   BIGSERIAL PRIMARY KEY,
    user_id              BIGINT NOT NULL REFERENCES users (id),
    key_hash             BYTEA NOT NULL UNIQUE,
    key_mask             TEXT NOT NULL,
    name                 TEXT NOT NULL DEFAULT '',
    status               INT NOT NULL DEFAULT 1,
    created_time         BIGINT NOT NULL DEFAULT EXTRACT(EPOCH FROM now())::BIGINT,
    accessed_time        BIGINT NOT NULL DEFAULT 0,
    expired_time         BIGINT NOT NULL DEFAULT -1,
    quota_limit          BIGINT NOT NULL DEFAULT 0,
    used_quota           BIGINT NOT NULL DEFAULT 0,
    unlimited_quota      BOOLEAN NOT NULL DEFAULT FALSE,
    model_limits_enabled BOOLEAN NOT NULL DEFAULT FALSE,
    model_limits         TEXT NOT NULL DEFAULT '',
    allow_ips            TEXT NOT NULL DEFAULT '',
    "group"              TEXT NOT NULL DEFAULT '',
    daily_quota          BIGINT NOT NULL DEFAULT 0,
    monthly_quota        BIGINT NOT NULL DEFAULT 0,
    ver                  BIGINT NOT NULL DEFAULT 1,
    deleted_at           BIGINT
);
CREATE INDEX tokens_user_id ON tokens (user_id) WHERE deleted_at IS NULL;

CREATE TABLE channels (
    id            BIGSERIAL PRIMARY KEY,
    type          INT NOT NULL DEFAULT 1,
    name          TEXT NOT NULL DEFAULT '',
    key           TEXT NOT NULL,
    base_url      TEXT NOT NULL DEFAULT '',
    models        TEXT NOT NULL DEFAULT '',
    "group"       TEXT NOT NULL DEFAULT 'default',
    priority      BIGINT NOT NULL DEFAULT 0,
    weight        INT NOT NULL DEFAULT 0,
    status        INT NOT NULL DEFAULT 1,
    model_mapping TEXT NOT NULL DEFAULT '',
    test_model    TEXT NOT NULL DEFAULT '',
    created_time  BIGINT NOT NULL DEFAULT EXTRACT(EPOCH FROM now())::BIGINT,
    test_time     BIGINT NOT NULL DEFAULT 0,
    response_time INT NOT NULL DEFAULT 0,
    used_quota    BIGINT NOT NULL DEFAULT 0,
    deleted_at    BIGINT
);

CREATE TABLE options (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

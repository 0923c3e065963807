-- Usage logs, partitioned by month on created_at (unix seconds) so that retention is
-- DROP TABLE of a partition. The flusher creates the partition for a month before it
-- inserts the first row of that month (store.logs.ensure_partition).
-- (request_id, created_at) is the idempotency key: redelivered events are skipped by
-- INSERT ... ON CONFLICT DO NOTHING.

CREATE TABLE logs (
    id                BIGSERIAL,
    request_id        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    type              INT NOT NULL DEFAULT 2,
    user_id           BIGINT NOT NULL,
    username          TEXT NOT NULL DEFAULT '',
    token_id          BIGINT NOT NULL DEFAULT 0,
    token_name        TEXT NOT NULL DEFAULT '',
    model_name        TEXT NOT NULL DEFAULT '',
    channel_id        BIGINT NOT NULL DEFAULT 0,
    "group"           TEXT NOT NULL DEFAULT '',
    quota             BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     INT NOT NULL DEFAULT 0,
    completion_tokens INT NOT NULL DEFAULT 0,
    use_time_ms       INT NOT NULL DEFAULT 0,
    is_stream         BOOLEAN NOT NULL DEFAULT FALSE,
    ip                TEXT NOT NULL DEFAULT '',
    content           TEXT NOT NULL DEFAULT '',
    other             TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (id, created_at),
    UNIQUE (request_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX logs_user_created ON logs (user_id, created_at);
CREATE INDEX logs_token_created ON logs (token_id, created_at);

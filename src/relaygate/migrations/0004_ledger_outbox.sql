-- Ledger outbox and top-up operation ids (DESIGN.md "Cache invalidation"; issue 9 item 11).
--
-- PostgreSQL is the system of record and Redis is derived from it. Every management write
-- to a token or user row bumps its ver and, in the same transaction, records here that the
-- row must be pushed to its Redis ledger hash. The row is deleted once a push of that ver
-- (or a newer one) succeeded; whatever a failed push left behind is pushed by the
-- reconciler when Redis is back. One row per ledger hash: `ver` is the newest to push.
-- user_id references users so that the shard is known without a lookup (and a TRUNCATE of
-- users cascades here).
CREATE TABLE ledger_outbox (
    kind       TEXT NOT NULL CHECK (kind IN ('token', 'user')),
    id         BIGINT NOT NULL,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    ver        BIGINT NOT NULL,
    created_at BIGINT NOT NULL DEFAULT EXTRACT(EPOCH FROM now())::BIGINT,
    PRIMARY KEY (kind, id)
);
CREATE INDEX ledger_outbox_age ON ledger_outbox (created_at);

-- A top-up is credited at most once per operation id: the id is claimed in the same
-- transaction as the credit, so a retried command re-pushes instead of crediting again.
CREATE TABLE quota_operations (
    op_id      TEXT PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    delta      BIGINT NOT NULL,
    created_at BIGINT NOT NULL DEFAULT EXTRACT(EPOCH FROM now())::BIGINT
);

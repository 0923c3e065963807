-- Token counts and latency as BIGINT: an upstream may report any count (10^12 tokens was
-- seen), and an INT overflow made PostgreSQL refuse the event (and, before the flusher
-- bisected refused batches, every event flushed with it). Every other count an event
-- carries (quota, user, token and channel ids, created_at) and every quota column of
-- users/tokens/channels is BIGINT already (0001_core.sql, 0002_logs.sql).
-- On a partitioned table the change applies to every partition (a table rewrite).

ALTER TABLE logs
    ALTER COLUMN prompt_tokens TYPE BIGINT,
    ALTER COLUMN completion_tokens TYPE BIGINT,
    ALTER COLUMN use_time_ms TYPE BIGINT;

"""PostgreSQL access: pool creation, migrations and named queries (no SQL in handlers)."""

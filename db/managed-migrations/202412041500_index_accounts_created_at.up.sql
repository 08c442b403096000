-- managed-migrate: no-transaction
-- managed-migrate: lock-timeout=5s
CREATE INDEX CONCURRENTLY IF NOT EXISTS accounts_created_at_idx ON accounts (created_at);

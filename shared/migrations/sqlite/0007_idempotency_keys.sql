-- Idempotency-Key of the server API's POSTs: the first answer, replayed to a retry. A row with
-- no status is a request in progress.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    status     INTEGER,
    body       TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (created_at);

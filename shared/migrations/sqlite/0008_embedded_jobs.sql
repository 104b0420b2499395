-- Embedded mode's jobs journal (shared::broker::memory): each job accepted live is written here
-- before it is published, and deleted once the in-process worker has applied it, so that a
-- crash loses nothing a client saw.
CREATE TABLE IF NOT EXISTS embedded_jobs (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL
);

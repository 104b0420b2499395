-- Gamification: activities (each counted once, by id), per-user stats, and which award
-- notifications still have to be published (a transactional outbox).
CREATE TABLE IF NOT EXISTS activities (
    id      TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    at      TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS user_stats (
    user_id         TEXT PRIMARY KEY,
    points          INTEGER NOT NULL DEFAULT 0,
    level           INTEGER NOT NULL DEFAULT 1,
    messages        INTEGER NOT NULL DEFAULT 0,
    tasks_completed INTEGER NOT NULL DEFAULT 0,
    focus_completed INTEGER NOT NULL DEFAULT 0,
    current_streak  INTEGER NOT NULL DEFAULT 0,
    longest_streak  INTEGER NOT NULL DEFAULT 0,
    last_active_day TEXT,
    unlocked        TEXT NOT NULL DEFAULT '[]'
);

ALTER TABLE notifications ADD COLUMN delivered INTEGER NOT NULL DEFAULT 1;
CREATE INDEX IF NOT EXISTS notifications_undelivered ON notifications (id) WHERE NOT delivered;

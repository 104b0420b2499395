-- Gamification: activities (each counted once, by id), per-user stats, and which award
-- notifications still have to be published (a transactional outbox).
CREATE TABLE IF NOT EXISTS activities (
    id      TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    kind    TEXT NOT NULL,
    at      TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS user_stats (
    user_id         TEXT PRIMARY KEY,
    points          BIGINT NOT NULL DEFAULT 0,
    level           BIGINT NOT NULL DEFAULT 1,
    messages        BIGINT NOT NULL DEFAULT 0,
    tasks_completed BIGINT NOT NULL DEFAULT 0,
    focus_completed BIGINT NOT NULL DEFAULT 0,
    current_streak  BIGINT NOT NULL DEFAULT 0,
    longest_streak  BIGINT NOT NULL DEFAULT 0,
    last_active_day DATE,
    -- JSON array of unlocked achievement ids.
    unlocked        TEXT NOT NULL DEFAULT '[]'
);

ALTER TABLE notifications ADD COLUMN IF NOT EXISTS delivered BOOLEAN NOT NULL DEFAULT TRUE;
CREATE INDEX IF NOT EXISTS notifications_undelivered ON notifications (id) WHERE NOT delivered;

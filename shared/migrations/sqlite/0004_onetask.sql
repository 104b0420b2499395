-- OneTask: workspace members, focus sessions (shared timer state) and their participants,
-- notifications (integer ids, also used for gamification events).
CREATE TABLE IF NOT EXISTS workspace_members (
    workspace_id TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);

CREATE TABLE IF NOT EXISTS focus_sessions (
    id                TEXT PRIMARY KEY,
    status            TEXT NOT NULL DEFAULT 'idle',
    remaining_seconds INTEGER NOT NULL DEFAULT 0,
    ends_at           TEXT,
    updated_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TABLE IF NOT EXISTS focus_participants (
    session_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    PRIMARY KEY (session_id, user_id)
);

CREATE TABLE IF NOT EXISTS notifications (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    title               TEXT NOT NULL,
    content             TEXT NOT NULL,
    notification_type   TEXT NOT NULL,
    related_entity_type TEXT,
    related_entity_id   TEXT,
    data                TEXT,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, id DESC);

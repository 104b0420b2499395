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
    -- Seconds left when not running; when running, ends_at says when it runs out.
    remaining_seconds BIGINT NOT NULL DEFAULT 0,
    ends_at           TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS focus_participants (
    session_id TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    PRIMARY KEY (session_id, user_id)
);

CREATE TABLE IF NOT EXISTS notifications (
    id                  BIGSERIAL PRIMARY KEY,
    user_id             TEXT NOT NULL,
    kind                TEXT NOT NULL,
    title               TEXT NOT NULL,
    content             TEXT NOT NULL,
    notification_type   TEXT NOT NULL,
    related_entity_type TEXT,
    -- JSON text: ids keep the JSON type the backend gave them.
    related_entity_id   TEXT,
    data                TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user_id, id DESC);

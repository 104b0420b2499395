-- Users, Send Buddy sessions and their messages.
CREATE TABLE IF NOT EXISTS users (
    id           TEXT PRIMARY KEY,
    username     TEXT NOT NULL,
    email        TEXT,
    display_name TEXT,
    is_active    BOOLEAN NOT NULL DEFAULT TRUE,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sessions (
    id              UUID PRIMARY KEY,
    inviter_id      TEXT NOT NULL,
    invitee_id      TEXT NOT NULL,
    last_message_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Written only by the worker, idempotently by id. sender_name is kept as it was sent, so that
-- history shows what the live frame showed.
CREATE TABLE IF NOT EXISTS session_messages (
    id          UUID PRIMARY KEY,
    session_id  UUID NOT NULL,
    sender_id   TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    content     TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX IF NOT EXISTS session_messages_by_session
    ON session_messages (session_id, created_at DESC, id DESC);

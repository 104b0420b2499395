-- Chats (chat.txt): members, messages (with threads and direct messages), read receipts.
CREATE TABLE IF NOT EXISTS chats (
    id              TEXT PRIMARY KEY,
    last_message_at TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS chat_members (
    chat_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (chat_id, user_id)
);

-- recipient_id is set for a direct message: private to sender and recipient, not in the chat's history.
CREATE TABLE IF NOT EXISTS chat_messages (
    id                UUID PRIMARY KEY,
    chat_id           TEXT NOT NULL,
    sender_id         TEXT NOT NULL,
    recipient_id      TEXT,
    content           TEXT NOT NULL,
    message_type      TEXT NOT NULL,
    parent_message_id UUID,
    created_at        TIMESTAMPTZ NOT NULL
);

CREATE INDEX IF NOT EXISTS chat_messages_by_chat ON chat_messages (chat_id, created_at DESC, id DESC);

-- Once per user and message.
CREATE TABLE IF NOT EXISTS read_receipts (
    message_id UUID NOT NULL,
    user_id    TEXT NOT NULL,
    chat_id    TEXT NOT NULL,
    read_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (message_id, user_id)
);
